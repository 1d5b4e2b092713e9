"""The counselor's ``!`` commands: close, risk, refer, book, cases, take, help.

Commands and the bot's answers live in the counselor's case channel (the bot's
DM with them), never in the client's room. There a command names the case by
its number, the engagement id shown as "Case N"::

    !close N resolved|face-to-face|continue|refer [note]
    !risk N high|medium|low
    !refer N @colleague:server
    !book N
    !cases
    !take [P]
    !help

A command typed into a session room (from Element, say) by the room's counselor
is carried out for that room's engagement, without the number; the bot redacts
it there and answers in the case channel only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bridge import booking_flow, handover
from bridge.effects import (
    OUTCOMES,
    RISKS,
    Effects,
    command_reply,
)
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord, Counselor, Engagement
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import clean_text, normalize_command, parse_number
from e2ecounsel.errors import MatrixError
from e2ecounsel.matrix import check

if TYPE_CHECKING:
    from bridge.engine import Engine

logger = logging.getLogger(__name__)

#: A command is "!" and a word; more exclamation marks are just emphasis.
_COMMAND = re.compile(r"!\w")


@dataclass(frozen=True)
class CounselorCall:
    """One counselor command about one case: who, which case, and where to answer."""

    engine: Engine
    fx: Effects
    eng: Engagement
    client: ClientRecord | None
    counselor: Counselor
    word: str
    args: str
    case_room: str

    @property
    def lang(self) -> str:
        return self.engine.counselor_lang(self.counselor)

    def reply(
        self, key: str, *, ok: bool = True, fact: CaseEvent | None = None, **params: object
    ) -> None:
        """Answer in the case channel, with the machine-readable reply for the counselor app.

        ``fact`` replaces the plain "reply" when the answer states a change the
        app tracks (the case closed, the client handed over).
        """
        self.fx.say(
            self.case_room,
            self.engine.render.text(self.lang, key, **params),
            reader=self.counselor.user_id,
            case=fact or command_reply(self.word, ok, self.eng.id, self.eng.room_id),
        )


# ------------------------------------------------------------------ entry points


async def session_command(
    engine: Engine,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    item: InboxItem,
    text: str,
) -> None:
    """A ``!`` line in a session room.

    From the room's counselor: carried out for this room's engagement and
    answered in their case channel. The command itself is redacted in the
    session room: the client must not read clinical notes ("!close refer
    suspected psychosis") or their risk level, and redaction is the only way
    to take back what a counselor's own app already sent there (the bot has
    power 100, redacting needs 50). The client's app may have shown it for a
    moment; it does not keep it. From the client, a counselor command gets a
    polite refusal and changes nothing; any other ``!`` line is conversation.
    """
    if not _COMMAND.match(text):
        return  # "!!! what a week": conversation, not a command
    word, args = normalize_command(text)
    handler = COUNSELOR_COMMANDS.get(word)
    if handler is None and word not in CASE_ONLY:
        if item.sender == eng.counselor_id:
            await _redact(engine, item)
            counselor = await engine.store.get_counselor(item.sender)
            if counselor is not None:
                room = await engine.case_room(counselor)
                call = CounselorCall(engine, fx, eng, client, counselor, word, args, room)
                call.reply("unknown_command_counselor", ok=False)
        return
    counselor = await engine.store.get_counselor(item.sender)
    if item.sender != eng.counselor_id or counselor is None or eng.status != "active":
        if item.sender != eng.client_id:
            await _redact(engine, item)  # a colleague's note is no more for the client
        lang = engine.lang_of(client) if item.sender == eng.client_id else None
        if lang is not None:
            fx.say(item.room_id, engine.render.text(lang, "not_allowed"))
        return
    await _redact(engine, item)
    room = await engine.case_room(counselor)
    call = CounselorCall(engine, fx, eng, client, counselor, word, args, room)
    if handler is None:
        call.reply("case.in_case_channel", ok=False)
        return
    await handler(call)


async def on_case_message(engine: Engine, item: InboxItem) -> None:
    """A message in a counselor's case channel: a command about a case, by its number."""
    fx = Effects(item.event_id)
    counselor = await engine.store.counselor_by_case_room(item.room_id)
    if counselor is None or item.sender != counselor.user_id or item.kind != "text":
        await engine.commit(fx, item.event_id)
        return
    text = clean_text(item.body, engine.max_chars)
    if not text.startswith("!"):
        await engine.commit(fx, item.event_id)
        return
    word, args = normalize_command(text)
    lang = engine.counselor_lang(counselor)
    room = item.room_id

    def say(key: str, *, ok: bool, **params: object) -> None:
        fx.say(room, engine.render.text(lang, key, **params), case=command_reply(word, ok))

    if word == "help":
        say("help.counselor", ok=True)
    elif word == "cases":
        await _list_cases(engine, fx, counselor, room)
    elif word == "take":
        await handover.cmd_take(engine, fx, item, args, reply_room=room, lang=lang)
    elif word not in COUNSELOR_COMMANDS:
        say("unknown_command_counselor", ok=False)
    else:
        number_text, _, rest = args.partition(" ")
        number = parse_number(number_text)
        eng = await engine.store.get_engagement(number) if number is not None else None
        if number is None:
            say("case.number_needed", ok=False, command=word)
        elif eng is None or eng.counselor_id != counselor.user_id or eng.status != "active":
            say("case.unknown", ok=False, number=number)
        else:
            client = await engine.store.get_client(eng.client_id)
            call = CounselorCall(engine, fx, eng, client, counselor, word, rest.strip(), room)
            await COUNSELOR_COMMANDS[word](call)
    await engine.commit(fx, item.event_id)


async def _redact(engine: Engine, item: InboxItem) -> None:
    """Take a command out of the session room (done again harmlessly on a replay)."""
    resp = await engine.session.client.room_redact(
        item.room_id, item.event_id, reason="counselor command"
    )
    try:
        check(resp, "redacting a counselor command")
    except MatrixError as exc:
        logger.warning("redacting a command in %s failed: %s", item.room_id, exc.errcode)


async def _list_cases(engine: Engine, fx: Effects, counselor: Counselor, room: str) -> None:
    lang = engine.counselor_lang(counselor)
    active = await engine.store.active_for_counselor(counselor.user_id)
    if not active:
        body = engine.render.text(lang, "case.none")
    else:
        lines = []
        for eng in active:
            client = await engine.store.get_client(eng.client_id)
            shared = eng.share_brief and client is not None
            pseudonym = str(client.profile.get("pseudonym") or "?") if shared and client else "—"
            key = "case.line_awaiting" if eng.awaiting_since else "case.line"
            lines.append(
                engine.render.text(
                    lang,
                    key,
                    number=eng.id,
                    pseudonym=pseudonym,
                    risk=engine.render.text(lang, f"risk.{eng.risk}"),
                )
            )
        body = engine.render.text(lang, "case.list", cases="\n".join(lines))
    fx.say(room, body, case=command_reply("cases", True))


# ------------------------------------------------------------------ commands


async def cmd_counselor_help(call: CounselorCall) -> None:
    call.reply("help.counselor")


async def cmd_close(call: CounselorCall) -> None:
    engine, fx, eng, client, counselor = call.engine, call.fx, call.eng, call.client, call.counselor
    args = call.args
    outcome = args.split(maxsplit=1)[0].lower() if args else ""
    if outcome not in OUTCOMES:
        call.reply("close.usage", ok=False)
        return
    note = args.split(maxsplit=1)[1].strip() if len(args.split(maxsplit=1)) > 1 else ""
    if note:
        fx.write(lambda: engine.store.set_close_note(eng.id, note))
    clang = engine.lang_of(client)
    if eng.room_id:
        fx.say(
            eng.room_id,
            engine.render.text(clang, f"close.{OUTCOMES[outcome]}", counselor_name=counselor.name),
        )
    if OUTCOMES[outcome] == "continue":
        fx.write(engine.audit_fn(counselor.user_id, "engagement.continue", eng.id))
        call.reply("close.continued")
        return
    fx.write(lambda: engine.store.close_engagement(eng.id, outcome))
    fx.write(engine.audit_fn(counselor.user_id, "engagement.close", eng.id, detail=outcome))
    closed = CaseEvent("closed", eng.id, eng.room_id, {"outcome": OUTCOMES[outcome]})
    call.reply("close.done", fact=closed, outcome=outcome)
    if client is not None and client.dm_room_id:
        rec = replace(client, pending={"kind": "survey", "engagement": eng.id})
        fx.write(lambda: engine.store.save_client(rec))
        fx.say(client.dm_room_id, engine.render.text(clang, "survey.ask"))
    if eng.room_id:
        fx.follow("lock", room=eng.room_id)
    fx.follow("drain", cause=f"close:{eng.id}")


async def cmd_risk(call: CounselorCall) -> None:
    engine, fx, eng, lang = call.engine, call.fx, call.eng, call.lang
    level = call.args.strip().lower()
    if level not in RISKS:
        call.reply("risk.usage", ok=False)
        return
    fx.write(lambda: engine.store.set_risk(eng.id, level))
    fx.write(engine.audit_fn(call.counselor.user_id, "engagement.risk", eng.id, detail=level))
    fx.say(
        call.case_room,
        engine.render.text(lang, "risk.set", level=engine.render.text(lang, f"risk.{level}")),
        reader=call.counselor.user_id,
        case=CaseEvent("risk", eng.id, eng.room_id, {"risk": level}),
    )


async def cmd_refer(call: CounselorCall) -> None:
    engine, fx, eng, client, counselor = call.engine, call.fx, call.eng, call.client, call.counselor
    target_id = call.args.strip()
    if not target_id.startswith("@") or client is None:
        call.reply("refer.usage", ok=False)
        return
    if target_id == counselor.user_id:
        call.reply("refer.same", ok=False)
        return
    target = await engine.store.get_counselor(target_id)
    if target is None or not target.active:
        call.reply("refer.unknown", ok=False)
        return
    if not await engine.has_room(target_id):
        call.reply("refer.full", ok=False, counselor_name=target.name)
        return
    released = CaseEvent("released", eng.id, eng.room_id, {})
    call.reply("refer.done", fact=released, counselor_name=target.name)
    fx.write(engine.audit_fn(counselor.user_id, "engagement.refer", eng.id))
    fx.follow(
        "switch",
        client=client.user_id,
        target=target_id,
        share=eng.share_brief,
        cause=fx.cause,
        note_key="refer.client",
        incoming_key="refer.incoming",
    )


async def cmd_book(call: CounselorCall) -> None:
    """``!book``: offer the client the next free slots, in their session room."""
    if call.client is None or call.eng.room_id is None:
        call.reply("booking.none", ok=False)
        return
    await booking_flow.offer_slots(
        call.engine, call.fx, call.client, call.eng, call.counselor, call.eng.room_id
    )
    call.reply("booking.offered")


CounselorHandler = Callable[[CounselorCall], Awaitable[None]]
COUNSELOR_COMMANDS: dict[str, CounselorHandler] = {
    "close": cmd_close,
    "risk": cmd_risk,
    "refer": cmd_refer,
    "help": cmd_counselor_help,
    "book": cmd_book,
}
#: Commands only the case channel knows (they name no single session room).
CASE_ONLY = frozenset({"cases", "take"})
