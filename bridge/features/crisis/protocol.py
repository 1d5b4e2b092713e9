"""The crisis protocol: the crisis reply to the client at once, risk high, and a
page to the on-call counselors (and the client's own) and the supervisors."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bridge.kernel.context import Context
from bridge.kernel.effects import Effects
from bridge.persistence.store import ClientRecord, Counselor, Engagement
from e2ecounsel import casechannel
from e2ecounsel.casechannel import CaseEvent

logger = logging.getLogger(__name__)


async def crisis_protocol(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    reason: str,
    *,
    reply_room: str,
    remember: bool = False,
) -> Engagement | None:
    """Crisis text to the client at once; risk high; a page to on-call and supervisors.

    The crisis reply is put first in ``fx`` so it is the next thing the
    client sees, whatever else the handler queues, and it says only what
    really happened: that the team was alerted if someone was paged, and
    plainly that nobody could be otherwise. The page is a row (its number
    is what ``!take`` answers) and a message that carries what the paged
    person needs to act and nothing the client wrote. With ``remember``, a
    client who has no open engagement yet is flagged in their profile so
    that matching prefers an on-call counselor (the intake saves its own
    record and does not need this). Returns the client's open engagement.
    """
    lang = ctx.lang_of(client)
    country = client.profile.get("country")
    eng = await ctx.store.current_engagement(client.user_id)
    session_room = eng.room_id if eng and eng.room_id else None
    if eng is not None:
        fx.write(lambda: ctx.store.set_risk(eng.id, "high"))
        fx.write(lambda: ctx.store.set_crisis(eng.id, True))
    elif remember:
        flagged = replace(client, profile={**client.profile, "crisis": True})
        fx.write(lambda: ctx.store.save_client(flagged))
    fx.write(
        ctx.audit_fn(
            client.user_id,
            "crisis",
            eng.id if eng else None,
            detail=reason.replace(" ", "_")[:64],
        )
    )
    logger.warning("crisis protocol started (%s)", reason)
    oncall = ctx.policy.service.on_call
    targets: list[Counselor] = []
    if oncall.page_on_crisis:
        targets = [c for c in await ctx.store.list_counselors(active_only=True) if c.on_call]
        if eng is not None and eng.counselor_id:
            assigned = await ctx.store.get_counselor(eng.counselor_id)
            if assigned is not None and assigned.user_id not in {t.user_id for t in targets}:
                targets.append(assigned)
    supervisors = ctx.live.supervisors_room if oncall.page_supervisors_on_crisis else None
    paged = bool(targets or supervisors)
    told = ctx.render.text(lang, "crisis.paged" if paged else "crisis.not_paged")
    crisis_reply = ctx.policy.crisis_reply(lang, country).rstrip() + "\n\n" + told
    fx.say(reply_room, crisis_reply)
    fx.messages.insert(0, fx.messages.pop())
    if not paged:
        return eng
    page_id = await ctx.pages.open(
        cause=f"{fx.cause}:{reason}",
        client_id=client.user_id,
        engagement_id=eng.id if eng else None,
        reason=reason,
    )
    key = "page.urgent" if reason == "command:urgent" else "page.crisis"
    case = CaseEvent(
        "page",
        eng.id if eng else None,
        session_room,
        {"page": page_id, "reason": reason, "client_room": session_room or reply_room},
    )
    for c in targets:
        body = ctx.render.text(ctx.counselor_lang(c), key, page=page_id)
        if c.case_room_id is None:
            fx.follow(
                "page", counselor=c.user_id, body=body, case=case.to_content(), cause=fx.cause
            )
        else:
            fx.say(c.case_room_id, body, reader=c.user_id, case=case, mention=c.user_id)
    if supervisors:
        lang0 = ctx.policy.service.default_language
        fx.say(supervisors, ctx.render.text(lang0, key, page=page_id), case=case)
    return eng


async def follow_page(ctx: Context, payload: dict[str, Any]) -> None:
    """A page for a counselor who had no case channel yet (it is created first)."""
    c = await ctx.store.get_counselor(str(payload["counselor"]))
    if c is None:
        return
    room = await ctx.case_room(c)
    fx = Effects(f"{payload['cause']}:page:{c.user_id}")
    case = casechannel.parse({casechannel.FIELD: payload["case"]})
    fx.say(room, str(payload["body"]), reader=c.user_id, case=case, mention=c.user_id)
    await ctx.commit(fx, None)
