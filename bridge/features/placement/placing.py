"""Placement: matching a client to a counselor, the session room, the brief, the
waiting list, and moving a client to another counselor (switch, referral,
re-match).

Every placement runs under the context's match lock, so two steps never place
one client twice; rooms are made with :meth:`Context.ensure_room`, so a crash
half-way never yields a second room.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from bridge.kernel import rooms
from bridge.kernel.context import Context
from bridge.kernel.effects import Effects
from bridge.kernel.ports import CRISIS_FLAG
from bridge.persistence.store import ClientRecord, Counselor, Engagement
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain import matching

logger = logging.getLogger(__name__)


async def place_client(
    ctx: Context,
    client: ClientRecord,
    *,
    cause: str,
    note_key: str = "intake.matched",
    incoming_key: str | None = None,
) -> None:
    """After intake: open an engagement and match it, or put it on the waitlist.

    Resumable: an engagement already open is reused, and one whose room
    was being created (see :meth:`Context.ensure_room`) goes to the counselor
    chosen then, so a crash half-way never yields a second room.
    """
    async with ctx.live.match_lock:
        existing = await ctx.store.current_engagement(client.user_id)
        if existing is None:
            crisis = bool(client.profile.get("crisis"))
            async with ctx.store.transaction():
                existing = await ctx.store.open_engagement(client.user_id, crisis=crisis)
                if crisis:
                    await ctx.store.set_risk(existing.id, "high")
                await ctx.audit(client.user_id, "engagement.open", existing.id)
            ctx.crash_point("engagement.opened")
        if existing.status != "waiting":
            return
        chosen = await _requested_counselor(ctx, existing)
        if chosen is None:
            chosen = matching.match(
                ctx.match_request(client), await ctx.counselor_loads(), ctx.match_weights()
            )
        if chosen is None:
            await _tell_waitlisted(ctx, client, cause)
            return
        await assign(
            ctx,
            existing,
            client,
            chosen,
            cause=cause,
            share_brief=existing.share_brief,
            note_key=note_key,
            incoming_key=incoming_key,
        )


async def _requested_counselor(ctx: Context, eng: Engagement) -> str | None:
    """The counselor an engagement's room is (being) created for, if still on the roster."""
    request = await ctx.store.room_request(f"engagement:{eng.id}")
    if request is None:
        return None
    counselor = await ctx.store.get_counselor(request.counselor_id)
    if counselor is not None and (counselor.active or request.attempted_at is not None):
        return counselor.user_id  # a room may exist already: use it
    await ctx.store.drop_room_request(request.purpose)
    return None


async def follow_place(ctx: Context, payload: dict[str, Any]) -> None:
    client = await ctx.store.get_client(str(payload["client"]))
    if client is None:
        return  # erased meanwhile
    await place_client(
        ctx,
        client,
        cause=str(payload["cause"]),
        note_key=str(payload.get("note_key") or "intake.matched"),
        incoming_key=payload.get("incoming_key"),
    )


async def follow_switch(ctx: Context, payload: dict[str, Any]) -> None:
    client = await ctx.store.get_client(str(payload["client"]))
    if client is None:
        return
    await switch(
        ctx,
        client,
        payload.get("target"),
        bool(payload["share"]),
        cause=str(payload["cause"]),
        note_key=str(payload["note_key"]),
        old_notice_key=payload.get("old_notice_key"),
        incoming_key=payload.get("incoming_key"),
        waitlist_key=str(payload.get("waitlist_key") or "intake.waitlisted"),
    )


async def follow_drain(ctx: Context, payload: dict[str, Any]) -> None:
    await drain_waitlist(ctx, str(payload["cause"]))


async def _tell_waitlisted(
    ctx: Context, client: ClientRecord, cause: str, *, key: str = "intake.waitlisted"
) -> None:
    waiting = await ctx.store.waiting()
    ids = [e.client_id for e in waiting]
    position = ids.index(client.user_id) + 1 if client.user_id in ids else len(ids)
    fx = Effects(cause)
    if client.dm_room_id:
        fx.say(client.dm_room_id, ctx.render.text(ctx.lang_of(client), key, position=position))
    await ctx.commit(fx, None)


def brief_data(
    ctx: Context, client: ClientRecord, counselor: Counselor, risk: str
) -> dict[str, Any]:
    """The brief as data, for the counselor app (keys: see :mod:`e2ecounsel.casechannel`)."""
    lang = ctx.counselor_lang(counselor)
    p = client.profile
    screening: list[dict[str, Any]] = []
    for inst_id in ctx.policy.service.screening:
        inst = ctx.policy.instruments[inst_id]
        entry: dict[str, Any] = {"instrument": inst.id, "title": inst.title.get(lang, inst.id)}
        scored = (p.get("scores") or {}).get(inst_id)
        if scored is not None:
            band = inst.band(str(scored.get("severity") or ""))
            entry.update(
                score=scored["score"],
                severity=band.severity if band else None,
                severity_label=band.label.get(lang, band.severity) if band else None,
            )
        screening.append(entry)
    critical: list[dict[str, Any]] = []
    answers = p.get("answers") or []
    for idx, inst_id in enumerate(ctx.policy.service.screening):
        inst = ctx.policy.instruments[inst_id]
        got = answers[idx] if idx < len(answers) else None
        if not got or len(got) != len(inst.items):
            continue  # skipped or unfinished: no critical item to report
        for item_index in inst.critical_hits(got):
            critical.append(
                {
                    "instrument": inst.id,
                    "title": inst.title.get(lang, inst.id),
                    "item": item_index + 1,
                    "answer": got[item_index],
                }
            )
    flags = ["check:no"] if p.get(CRISIS_FLAG) == "check:no" else []
    topic = ctx.policy.service.topic(str(p.get("topic") or ""))
    country = ctx.policy.crisis.country(p.get("country"))
    return {
        "pseudonym": p.get("pseudonym"),
        "language": client.language,
        "country": country.code,
        "country_label": country.label.get(lang, country.code),
        "topic": topic.id if topic else None,
        "topic_label": topic.label.get(lang, topic.id) if topic else None,
        "risk": risk,
        "screening": screening,
        "critical": critical,
        "consent_date": (client.consented_at or "")[:10] or None,
        "flags": flags,
    }


def brief_text(
    ctx: Context, counselor: Counselor, data: dict[str, Any], room_id: str, case: int
) -> str:
    """The human side of the brief, rendered from :func:`brief_data`."""
    lang = ctx.counselor_lang(counselor)
    lines = []
    for entry in data["screening"]:
        if "score" not in entry:
            lines.append(
                ctx.render.text(lang, "brief.screening_skipped", instrument_title=entry["title"])
            )
            continue
        lines.append(
            ctx.render.text(
                lang,
                "brief.screening_line",
                instrument_title=entry["title"],
                score=entry["score"],
                severity=entry["severity_label"] or "",
            )
        )
    for hit in data["critical"]:
        lines.append(
            ctx.render.text(
                lang,
                "brief.critical",
                instrument_title=hit["title"],
                item=hit["item"],
                answer=hit["answer"],
            )
        )
    if "check:no" in data.get("flags", ()):
        lines.append(ctx.render.text(lang, "brief.check_no"))
    return ctx.render.text(
        lang,
        "brief.new",
        pseudonym=data["pseudonym"] or "?",
        language=data["language"] or "?",
        country=data["country_label"],
        topic=data["topic_label"] or "?",
        screening="\n".join(lines),
        risk=ctx.render.text(lang, f"risk.{data['risk']}"),
        room_link=rooms.room_link(room_id),
        consent_date=data["consent_date"] or "?",
        case=case,
    )


async def assign(
    ctx: Context,
    eng: Engagement,
    client: ClientRecord,
    counselor_id: str,
    *,
    cause: str,
    share_brief: bool = True,
    note_key: str = "intake.matched",
    incoming_key: str | None = None,
) -> str:
    """Create the session room for an engagement and tell everyone.

    The counselor's case channel gets ``incoming_key`` (a hand-over note)
    if given, then the brief, or only the room link when the client chose
    not to share their intake summary. The room is made (or found again)
    first; the assignment, every message and the counselor's next digest
    then commit together, with transaction ids derived from the
    engagement, so a repeated assignment sends nothing twice. Callers
    hold the match lock.
    """
    counselor = await ctx.store.get_counselor(counselor_id)
    assert counselor is not None
    lang = ctx.lang_of(client)
    purpose = f"engagement:{eng.id}"
    room_id = await ctx.ensure_room(
        purpose,
        counselor.user_id,
        rooms.session_room_body(
            name=ctx.render.text(lang, "session.room_name"),
            counselor=counselor.user_id,
            client=client.user_id,
        ),
    )
    case_room = await ctx.case_room(counselor)
    fresh = await ctx.store.get_engagement(eng.id)
    risk = fresh.risk if fresh else "low"
    fx = Effects(f"assign:{eng.id}:{counselor_id}")
    fx.write(lambda: ctx.store.assign(eng.id, counselor.user_id, room_id))
    fx.write(lambda: ctx.store.set_room(room_id, "session", client.user_id))
    fx.write(lambda: ctx.store.drop_room_request(purpose))
    fx.write(ctx.audit_fn(counselor.user_id, "engagement.assign", eng.id))
    country = client.profile.get("country")
    fx.say(
        room_id,
        ctx.render.text(
            lang,
            "session.intro",
            counselor_name=counselor.name,
            credentials=counselor.credentials,
            crisis_line=ctx.policy.crisis_line(lang, country),
        ),
        reader=client.user_id,
    )
    clang = ctx.counselor_lang(counselor)
    link = rooms.room_link(room_id)
    if incoming_key is not None:
        fx.say(
            case_room,
            ctx.render.text(clang, incoming_key, room_link=link),
            reader=counselor.user_id,
        )
    data: dict[str, Any] = {"case": eng.id, "shared": share_brief, "risk": risk}
    if share_brief:
        data.update(brief_data(ctx, client, counselor, risk))
        brief = brief_text(ctx, counselor, data, room_id, eng.id)
    else:
        brief = ctx.render.text(clang, "brief.not_shared", room_link=link, case=eng.id)
    fx.say(
        case_room,
        brief,
        reader=counselor.user_id,
        about=client.user_id,
        case=CaseEvent("brief", eng.id, room_id, data),
    )
    if client.dm_room_id:
        fx.say(client.dm_room_id, ctx.render.text(lang, note_key, counselor_name=counselor.name))
    fresh_counselor = await ctx.store.get_counselor(counselor_id)
    if fresh_counselor is not None:
        cadence = ctx.features.cadence
        fx.write(lambda: cadence.plan_digest(ctx, fresh_counselor, ctx.clock()))
    await ctx.commit(fx, None)
    logger.info("engagement %d assigned (%s)", eng.id, cause)
    ctx.crash_point("assigned")
    return room_id


async def drain_waitlist(ctx: Context, cause: str) -> None:
    """Assign waiting clients while capacity allows (crisis first, then FIFO)."""
    async with ctx.live.match_lock:
        waiting = await ctx.store.waiting()
        if not waiting:
            return
        clients = {}
        wl = []
        for e in waiting:
            c = await ctx.store.get_client(e.client_id)
            if c is None:
                continue
            request = await ctx.store.room_request(f"engagement:{e.id}")
            if request is not None and request.attempted_at is None:
                continue  # a switch's own follow-up places it, with its texts
            requested = await _requested_counselor(ctx, e) if request else None
            if requested is not None:
                # Its room was being created when the bridge stopped: finish that.
                await assign(ctx, e, c, requested, cause=f"{cause}:{e.id}")
                continue
            clients[e.client_id] = (c, e)
            wl.append(
                matching.WaitingClient(
                    e.client_id,
                    datetime.fromisoformat(e.opened_at),
                    ctx.match_request(c, crisis=e.crisis),
                )
            )
        pairs = matching.assign_from_waitlist(wl, await ctx.counselor_loads(), ctx.match_weights())
        for client_id, counselor_id in pairs:
            c, e = clients[client_id]
            await assign(
                ctx, e, c, counselor_id, cause=f"{cause}:{e.id}", note_key="waitlist.assigned"
            )


async def switch(
    ctx: Context,
    client: ClientRecord,
    target_id: str | None,
    share: bool,
    *,
    cause: str,
    note_key: str,
    old_notice_key: str | None = None,
    incoming_key: str | None = None,
    waitlist_key: str = "intake.waitlisted",
) -> None:
    """Move the client's active engagement to another counselor, in a new room.

    Used by the client's ``switch``, a counselor's ``!refer``, a
    supervisor's ``!reassign`` and the re-match after a counselor leaves
    the roster. ``target_id`` None (or a target who has no room any more)
    means "the best match other than the current counselor"; when nobody
    is free the client waits on the list and is told so with
    ``waitlist_key`` (a follow-up of the same step). The old
    engagement is closed without an outcome and the new one opened (with
    the risk level, the crisis flag and the chosen counselor) in one
    transaction that also records the follow-ups: the old counselor
    leaves the old room (the client keeps it and its history) and the new
    room is made. The decision runs under the match lock, so the periodic
    waitlist drain cannot grab the new engagement half-way; the follow-ups
    run once the lock is released.
    """
    async with ctx.live.match_lock:
        eng = await ctx.store.current_engagement(client.user_id)
        if eng is None or eng.status != "active" or eng.counselor_id is None:
            return
        old_counselor, old_room = eng.counselor_id, eng.room_id
        if target_id == old_counselor:
            return
        loads = await ctx.counselor_loads(exclude={old_counselor})
        request = ctx.match_request(client, eng.crisis)
        if target_id is None or not any(c.id == target_id and c.has_room for c in loads):
            target_id = matching.match(replace(request, preferred=None), loads, ctx.match_weights())
        chosen = target_id

        async def move() -> None:
            await ctx.store.close_engagement(eng.id, None)
            await ctx.audit(client.user_id, "engagement.switch", eng.id)
            new = await ctx.store.open_engagement(
                client.user_id, crisis=eng.crisis, share_brief=share
            )
            if eng.risk != "low":
                await ctx.store.set_risk(new.id, eng.risk)
            if chosen is not None:
                await ctx.store.request_room(f"engagement:{new.id}", chosen)

        fx = Effects(f"{cause}:switch")
        fx.write(move)
        if old_room:
            fx.follow(
                "retire",
                room=old_room,
                counselor=old_counselor,
                client=client.user_id,
                engagement=eng.id,
                cause=f"{cause}:old-room",
                moved=chosen is not None,
                notice_key=old_notice_key,
            )
        if chosen is not None:
            fx.follow(
                "place",
                client=client.user_id,
                cause=f"{cause}:switch",
                note_key=note_key,
                incoming_key=incoming_key,
            )
        else:
            fx.follow(
                "waitlisted", client=client.user_id, cause=f"{cause}:waitlist", key=waitlist_key
            )
        await ctx.work.commit(fx, None, follow=False)
    await ctx.work.run([f.key for f in fx.follow_ups])


async def follow_waitlisted(ctx: Context, payload: dict[str, Any]) -> None:
    """Tell a client they are on the waiting list (unless placed or gone meanwhile)."""
    client = await ctx.store.get_client(str(payload["client"]))
    if client is None:
        return
    eng = await ctx.store.current_engagement(client.user_id)
    if eng is None or eng.status != "waiting":
        return
    await _tell_waitlisted(ctx, client, str(payload["cause"]), key=str(payload["key"]))


async def follow_retire(ctx: Context, payload: dict[str, Any]) -> None:
    """The old counselor leaves the client's old room; the client keeps it."""
    room_id, counselor_id = str(payload["room"]), str(payload["counselor"])
    client = await ctx.store.get_client(str(payload["client"]))
    counselor = await ctx.store.get_counselor(counselor_id)
    fx = Effects(str(payload["cause"]))
    if payload.get("moved") and client is not None:
        fx.say(room_id, ctx.render.text(ctx.lang_of(client), "switch.old_room"))
    # Without a notice of its own the counselor is still told (and their
    # app drops the client): a referral, a re-match after a roster change.
    notice_key = payload.get("notice_key") or "case.handed_over"
    engagement = int(payload["engagement"])
    if counselor is not None and counselor.case_room_id:
        fx.say(
            counselor.case_room_id,
            ctx.render.text(
                ctx.counselor_lang(counselor),
                str(notice_key),
                room_link=rooms.room_link(room_id),
                case=engagement,
            ),
            reader=counselor.user_id,
            case=CaseEvent("released", engagement, room_id),
        )
    await ctx.commit(fx, None)
    await rooms.kick(ctx.matrix, room_id, counselor_id)
    ctx.crash_point("retire.kicked")
