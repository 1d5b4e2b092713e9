"""What a client's message means for their safety, before anything else reads it.

The detector (``e2ecounsel.domain.crisis``) says ``protocol``, ``check`` or ``none``. Here:

- **protocol**: the crisis protocol (reply, risk high, pages), but once per active crisis: within
  the policy's ``repeat_minutes`` of the last one the client gets a short, warm acknowledgement
  with the crisis line instead, and nobody is paged again. The engagement stays high risk and at
  the top of the queue. ``urgent`` is a command and always pages (``client_commands``).
- **check**: one direct question ("are you thinking about ending your life?"). While it is
  open (``check_minutes``) a ``yes`` starts the protocol and a ``no`` gets a kind reply and a
  ``flag`` for the counselor; any other message goes on as usual, and no second check is asked.

What the bot remembers lives in the client's (sealed) profile: when the check was asked, when
the protocol last ran, and the last flag. Nothing here logs or pages the client's words.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bridge.features.crisis.protocol import crisis_protocol
from bridge.kernel import rooms
from bridge.kernel.effects import Effects
from bridge.kernel.ports import CRISIS_FLAG, Screened
from bridge.persistence.store import ClientRecord
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.crisis import Outcome

if TYPE_CHECKING:
    from bridge.kernel.context import Context
    from e2ecounsel.policy import Policy

logger = logging.getLogger(__name__)

#: Profile keys (ISO times, a reason id).
CHECK_ASKED = "crisis_check_at"
PROTOCOL_AT = "crisis_protocol_at"

_WORDS = re.compile(r"[^\W_]+")


def _since(profile: dict[str, object], key: str, now: datetime) -> timedelta | None:
    value = profile.get(key)
    if not isinstance(value, str):
        return None
    try:
        return now - datetime.fromisoformat(value)
    except (ValueError, TypeError):
        return None


def _within(profile: dict[str, object], key: str, now: datetime, window: timedelta) -> bool:
    age = _since(profile, key, now)
    return age is not None and timedelta(0) <= age < window


def _answer(policy: Policy, text: str, lang: str) -> str | None:
    """``yes`` or ``no`` when the message starts with one ("Yes, I am", "tidak kok")."""
    words = _WORDS.findall(unicodedata.normalize("NFKC", text).casefold())
    meaning = policy.meaning(words[0], lang) if words else None
    return meaning if meaning in ("yes", "no") else None


async def screen(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    text: str,
    *,
    room: str,
    where: str,
    remember: bool = False,
) -> Screened | None:
    """Handle ``text`` if it is a crisis matter or the answer to an open check question.

    Returns what was done, with the client as now saved (the caller builds on it, never on the
    old record), or ``None`` when the message goes on to the intake or the commands.
    """
    now = ctx.clock()
    policy = ctx.policy.crisis
    profile = dict(client.profile)
    lang = ctx.lang_of(client)
    checking = _within(profile, CHECK_ASKED, now, policy.check_window)
    if checking:
        answer = _answer(ctx.policy, text, lang)
        if answer is not None:
            profile.pop(CHECK_ASKED, None)
            answered = replace(client, profile=profile)
            if answer == "yes":
                return await _protocol(ctx, fx, answered, "check:yes", room, remember)
            if ctx.detector.triage(text).outcome is Outcome.PROTOCOL:  # "no, I want to die"
                return await _protocol(ctx, fx, answered, f"phrase:{where}", room, remember)
            declined = await _declined(ctx, fx, answered, room, lang)
            return Screened(declined, "answered")
    found = ctx.detector.triage(text)
    if found.outcome is Outcome.PROTOCOL:
        return await _protocol(ctx, fx, client, f"phrase:{where}", room, remember)
    if found.outcome is Outcome.NONE:
        return None
    if checking or _within(profile, PROTOCOL_AT, now, policy.repeat_window):
        # One check at a time, and none in the middle of an active crisis.
        fx.say(room, ctx.render.text(lang, "crisis.ack", crisis_line=_line(ctx, client)))
        return Screened(client, "ack")
    profile[CHECK_ASKED] = now.isoformat()
    asked = replace(client, profile=profile)
    fx.say(room, ctx.render.text(lang, "crisis.check"))
    fx.write(lambda: ctx.store.save_client(asked))
    fx.write(ctx.audit_fn(client.user_id, "crisis.check", detail=f"{where}:{found.reason}"[:64]))
    logger.info("crisis check asked (%s)", found.reason)
    return Screened(asked, "check")


def _line(ctx: Context, client: ClientRecord) -> str:
    return ctx.policy.crisis_line(ctx.lang_of(client), client.profile.get("country"))


async def _protocol(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    reason: str,
    room: str,
    remember: bool,
) -> Screened:
    now = ctx.clock()
    profile = dict(client.profile)
    if _within(profile, PROTOCOL_AT, now, ctx.policy.crisis.repeat_window):
        lang = ctx.lang_of(client)
        fx.say(room, ctx.render.text(lang, "crisis.ack", crisis_line=_line(ctx, client)))
        fx.write(ctx.audit_fn(client.user_id, "crisis.repeat", detail=reason[:64]))
        if reason == "check:yes":  # the open check was closed
            fx.write(lambda: ctx.store.save_client(client))
        return Screened(client, "ack")
    await crisis_protocol(ctx, fx, client, reason, reply_room=room, remember=remember)
    profile[PROTOCOL_AT] = now.isoformat()
    if remember:
        profile["crisis"] = True
    saved = replace(client, profile=profile)
    fx.write(lambda: ctx.store.save_client(saved))
    return Screened(saved, "protocol")


async def _declined(
    ctx: Context, fx: Effects, client: ClientRecord, room: str, lang: str
) -> ClientRecord:
    """A "no": a kind reply, and a flag the counselor sees (never silence)."""
    profile = {**client.profile, CRISIS_FLAG: "check:no"}
    flagged = replace(client, profile=profile)
    fx.say(room, ctx.render.text(lang, "crisis.check_no", crisis_line=_line(ctx, client)))
    fx.write(lambda: ctx.store.save_client(flagged))
    eng = await ctx.store.current_engagement(client.user_id)
    fx.write(ctx.audit_fn(client.user_id, "crisis.check_no", eng.id if eng else None))
    if eng is not None and eng.counselor_id:
        counselor = await ctx.store.get_counselor(eng.counselor_id)
        if counselor is not None and counselor.case_room_id is not None:
            link = rooms.room_link(eng.room_id or room)
            fx.say(
                counselor.case_room_id,
                ctx.render.text(ctx.counselor_lang(counselor), "flag.check_no", room_link=link),
                reader=counselor.user_id,
                case=CaseEvent("flag", eng.id, eng.room_id, {"reason": "check:no"}),
            )
    return flagged
