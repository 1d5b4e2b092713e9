"""The counselor's ``!`` commands in a session room: close, risk, refer, book, help."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from bridge import booking_flow
from bridge.effects import (
    OUTCOMES,
    RISKS,
    Effects,
)
from bridge.inbox import InboxItem
from bridge.store import ClientRecord, Counselor, Engagement
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import normalize_command

if TYPE_CHECKING:
    from bridge.engine import Engine

logger = logging.getLogger(__name__)


async def counselor_command(
    engine: Engine,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    item: InboxItem,
    text: str,
) -> None:
    word, args = normalize_command(text)
    handler = COUNSELOR_COMMANDS.get(word)
    counselor = await engine.store.get_counselor(item.sender)
    if item.sender != eng.counselor_id or counselor is None or eng.status != "active":
        if handler is not None:
            lang = (
                engine.counselor_lang(counselor)
                if counselor is not None and item.sender != eng.client_id
                else engine.lang_of(client)
            )
            fx.say(item.room_id, engine.render.text(lang, "not_allowed"))
        return
    if handler is None:
        fx.say(
            item.room_id,
            engine.render.text(engine.counselor_lang(counselor), "unknown_command_counselor"),
        )
        return
    await handler(engine, fx, eng, client, counselor, args, item)


async def cmd_counselor_help(
    engine: Engine,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    counselor: Counselor,
    args: str,
    item: InboxItem,
) -> None:
    fx.say(item.room_id, engine.render.text(engine.counselor_lang(counselor), "help.counselor"))


async def cmd_close(
    engine: Engine,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    counselor: Counselor,
    args: str,
    item: InboxItem,
) -> None:
    """End the engagement with one of the four outcomes (``continue`` ends only a round).

    ``continue`` is the next phase of online counseling: the round is
    audited and nothing closes. The other three close the engagement, keep the
    closing note sealed (the hand-over for ``face-to-face`` and ``refer``),
    make the room read-only for both people (its history stays readable),
    tell the counselor's app with a ``closed`` case event and ask the client
    for a short survey.
    """
    lang = engine.counselor_lang(counselor)
    outcome = args.split(maxsplit=1)[0].lower() if args else ""
    if outcome not in OUTCOMES:
        fx.say(item.room_id, engine.render.text(lang, "close.usage"))
        return
    note = args.split(maxsplit=1)[1].strip() if len(args.split(maxsplit=1)) > 1 else ""
    if note:
        fx.write(lambda: engine.store.set_close_note(eng.id, note))
    clang = engine.lang_of(client)
    session_room = eng.room_id or item.room_id  # the client's room, wherever the command came
    fx.say(
        session_room,
        engine.render.text(clang, f"close.{OUTCOMES[outcome]}", counselor_name=counselor.name),
    )
    if OUTCOMES[outcome] == "continue":
        fx.write(engine.audit_fn(counselor.user_id, "engagement.continue", eng.id))
        fx.say(item.room_id, engine.render.text(lang, "close.continued"))
        return
    fx.write(lambda: engine.store.close_engagement(eng.id, outcome))
    fx.write(engine.audit_fn(counselor.user_id, "engagement.close", eng.id, detail=outcome))
    fx.say(item.room_id, engine.render.text(lang, "close.done", outcome=outcome))
    if counselor.case_room_id:
        fx.say(
            counselor.case_room_id,
            engine.render.text(lang, "case.closed", case=eng.id, outcome=outcome),
            reader=counselor.user_id,
            case=CaseEvent("closed", eng.id, session_room, {"outcome": OUTCOMES[outcome]}),
        )
    if client is not None and client.dm_room_id:
        rec = replace(client, pending={"kind": "survey", "engagement": eng.id})
        fx.write(lambda: engine.store.save_client(rec))
        fx.say(client.dm_room_id, engine.render.text(clang, "survey.ask"))
    fx.follow("lock", room=session_room)
    fx.follow("drain", cause=f"close:{eng.id}")


async def cmd_risk(
    engine: Engine,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    counselor: Counselor,
    args: str,
    item: InboxItem,
) -> None:
    lang = engine.counselor_lang(counselor)
    level = args.strip().lower()
    if level not in RISKS:
        fx.say(item.room_id, engine.render.text(lang, "risk.usage"))
        return
    fx.write(lambda: engine.store.set_risk(eng.id, level))
    fx.write(engine.audit_fn(counselor.user_id, "engagement.risk", eng.id, detail=level))
    fx.say(
        item.room_id,
        engine.render.text(lang, "risk.set", level=engine.render.text(lang, f"risk.{level}")),
    )


async def cmd_refer(
    engine: Engine,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    counselor: Counselor,
    args: str,
    item: InboxItem,
) -> None:
    lang = engine.counselor_lang(counselor)
    target_id = args.strip()
    if not target_id.startswith("@") or client is None:
        fx.say(item.room_id, engine.render.text(lang, "refer.usage"))
        return
    if target_id == counselor.user_id:
        fx.say(item.room_id, engine.render.text(lang, "refer.same"))
        return
    target = await engine.store.get_counselor(target_id)
    if target is None or not target.active:
        fx.say(item.room_id, engine.render.text(lang, "refer.unknown"))
        return
    if not await engine.has_room(target_id):
        fx.say(item.room_id, engine.render.text(lang, "refer.full", counselor_name=target.name))
        return
    fx.say(item.room_id, engine.render.text(lang, "refer.done", counselor_name=target.name))
    fx.write(engine.audit_fn(counselor.user_id, "engagement.refer", eng.id))
    fx.follow(
        "switch",
        client=client.user_id,
        target=target_id,
        share=eng.share_brief,
        cause=item.event_id,
        note_key="refer.client",
        incoming_key="refer.incoming",
    )


CounselorHandler = Callable[
    ["Engine", Effects, Engagement, "ClientRecord | None", Counselor, str, InboxItem],
    Awaitable[None],
]
COUNSELOR_COMMANDS: dict[str, CounselorHandler] = {
    "close": cmd_close,
    "risk": cmd_risk,
    "refer": cmd_refer,
    "help": cmd_counselor_help,
    "book": booking_flow.cmd_counselor_book,
}
