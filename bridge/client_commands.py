"""A client's commands in their DM with the bot, and their answers to the bot's questions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bridge import booking_flow
from bridge.cadence import Cadence, client_zone, windows_of
from bridge.effects import (
    ALWAYS_AVAILABLE,
    AUTO,
    BOOK_WORDS,
    NO,
    SKIP,
    YES,
    Effects,
)
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord, Counselor
from e2ecounsel.domain import matching
from e2ecounsel.domain.cadence import next_window
from e2ecounsel.domain.text import normalize_command, parse_number

if TYPE_CHECKING:
    from bridge.engine import Engine

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ client commands


async def client_command(
    engine: Engine, fx: Effects, client: ClientRecord, text: str, item: InboxItem
) -> None:
    """A DM after the intake: the answer to an open question, or a command.

    Anything else is most likely a client chatting with the bot as if it
    were their counselor; the friendly list of commands (which also says
    where to write to the counselor) is the right answer to both.
    """
    word, args = normalize_command(text)
    if client.pending is not None and not interrupts(word, args, client.pending):
        await answer_pending(engine, fx, client, client.pending, text, item)
        return
    handler = CLIENT_COMMANDS.get(word)
    if handler is None:
        fx.say(item.room_id, engine.render.text(engine.lang_of(client), "unknown_command"))
        return
    await handler(engine, fx, client, args, item)


def interrupts(word: str, args: str, pending: dict[str, Any]) -> bool:
    """True when a line is a command even though the bot waits for an answer.

    Only a bare global command counts ("status", not "status is fine" typed as
    a survey comment), and ``book N`` while slots are on offer (it books slot N).
    """
    if word in ALWAYS_AVAILABLE:
        return not args
    return word in BOOK_WORDS and pending.get("kind") == "book"


async def cmd_help(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    fx.say(item.room_id, engine.render.text(engine.lang_of(client), "help.client"))


async def cmd_status(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    lang = engine.lang_of(client)
    eng = await engine.store.current_engagement(client.user_id)
    if eng is None:
        fx.say(item.room_id, engine.render.text(lang, "status.none"))
        return
    if eng.status == "waiting":
        waiting = [e.client_id for e in await engine.store.waiting()]
        pos = waiting.index(client.user_id) + 1 if client.user_id in waiting else 1
        fx.say(item.room_id, engine.render.text(lang, "status.waitlisted", position=pos))
        return
    counselor = await engine.store.get_counselor(eng.counselor_id or "")
    if counselor is None:
        fx.say(item.room_id, engine.render.text(lang, "status.none"))
        return
    parts = [
        engine.render.text(
            lang,
            "status.active",
            counselor_name=counselor.name,
            credentials=counselor.credentials,
        )
    ]
    when = await next_window_text(engine, counselor, client)
    key = "status.awaiting" if eng.awaiting_since else "status.not_awaiting"
    parts.append(engine.render.text(lang, key, next_window=when))
    parts.append(await booking_flow.bookings_text(engine, client))
    fx.say(item.room_id, "\n".join(parts))


async def next_window_text(engine: Engine, counselor: Counselor, client: ClientRecord) -> str:
    """The counselor's next reply window, in the client's zone, days off honoured."""
    days_off = ""
    if engine.bookings is not None:
        _, days_off = await engine.bookings.schedule_of(counselor.user_id)
    try:
        nxt = next_window(engine.clock(), windows_of(counselor, days_off))
    except ValueError:
        return "?"
    if nxt is None:
        return "?"
    return Cadence.when(nxt, client_zone(client, counselor))


async def cmd_counselors(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    lang = engine.lang_of(client)
    counselors = await engine.store.list_counselors(active_only=True)
    if not counselors:
        fx.say(item.room_id, engine.render.text(lang, "counselors.none"))
        return
    fx.say(
        item.room_id,
        engine.render.text(
            lang, "counselors.list", options=engine.render.profiles(lang, counselors)
        ),
    )


async def cmd_urgent(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    await engine.crisis_protocol(
        fx, client, "command:urgent", reply_room=item.room_id, remember=True
    )
    fx.say(item.room_id, engine.render.text(engine.lang_of(client), "urgent.ack"))


async def cmd_language(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    lang = engine.lang_of(client)
    rec = replace(client, pending={"kind": "language"})
    fx.write(lambda: engine.store.save_client(rec))
    fx.say(item.room_id, engine.render.text(lang, "language.choose"))


async def cmd_erase(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    rec = replace(client, pending={"kind": "erase"})
    fx.write(lambda: engine.store.save_client(rec))
    fx.say(item.room_id, engine.render.text(engine.lang_of(client), "erase.confirm"))


async def cmd_switch(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    lang = engine.lang_of(client)
    eng = await engine.store.current_engagement(client.user_id)
    if eng is None or eng.status != "active":
        fx.say(item.room_id, engine.render.text(lang, "switch.none"))
        return
    loads = await engine.counselor_loads(exclude={eng.counselor_id or ""})
    req = engine.match_request(client)
    offer = [c.id for c in loads if matching.eligible(req, c)]
    if not offer:
        fx.say(item.room_id, engine.render.text(lang, "switch.none"))
        return
    counselors = {c.user_id: c for c in await engine.store.list_counselors(active_only=True)}
    rec = replace(client, pending={"kind": "switch", "offer": offer})
    fx.write(lambda: engine.store.save_client(rec))
    fx.say(
        item.room_id,
        engine.render.text(
            lang,
            "switch.choose",
            options=engine.render.profiles(lang, [counselors[i] for i in offer]),
        ),
    )


async def _best_other(engine: Engine, client: ClientRecord) -> str | None:
    """The counselor matching would pick for the client, other than their current one."""
    eng = await engine.store.current_engagement(client.user_id)
    current = eng.counselor_id if eng and eng.counselor_id else ""
    return matching.match(
        engine.match_request(client),
        await engine.counselor_loads(exclude={current}),
        engine.match_weights(),
    )


# ------------------------------------------------------------------ pending answers


async def answer_pending(
    engine: Engine,
    fx: Effects,
    client: ClientRecord,
    pending: dict[str, Any],
    text: str,
    item: InboxItem,
) -> None:
    lang = engine.lang_of(client)
    room = item.room_id
    answer = normalize_command(text)[0]
    kind = pending.get("kind")
    cleared = replace(client, pending=None)
    if kind == "erase":
        if answer in YES:
            await engine.erase(fx, client, item)
        else:
            fx.write(lambda: engine.store.save_client(cleared))
            fx.say(room, engine.render.text(lang, "erase.cancelled"))
    elif kind == "language":
        langs = engine.policy.languages
        pick = (parse_number(answer) or 0) - 1
        if 0 <= pick < len(langs):
            new = replace(cleared, language=langs[pick])
            fx.write(lambda: engine.store.save_client(new))
            fx.say(room, engine.render.text(langs[pick], "language.changed"))
        else:
            fx.say(room, engine.render.text(lang, "language.invalid"))
    elif kind == "switch":
        offer = list(pending.get("offer", []))
        if answer in NO:
            fx.write(lambda: engine.store.save_client(cleared))
            fx.say(room, engine.render.text(lang, "switch.cancelled"))
            return
        if answer in AUTO:
            target_id = await _best_other(engine, client)
        else:
            pick = (parse_number(answer) or 0) - 1
            if not 0 <= pick < len(offer):
                fx.say(room, engine.render.text(lang, "switch.invalid", count=len(offer)))
                return
            target_id = offer[pick]
        target = await engine.store.get_counselor(target_id or "")
        if target is None or not target.active:
            fx.write(lambda: engine.store.save_client(cleared))
            fx.say(room, engine.render.text(lang, "switch.none"))
            return
        rec = replace(client, pending={"kind": "switch_brief", "target": target.user_id})
        fx.write(lambda: engine.store.save_client(rec))
        fx.say(room, engine.render.text(lang, "switch.brief_consent", counselor_name=target.name))
    elif kind == "switch_brief":
        if answer not in YES and answer not in NO:
            fx.say(room, engine.render.text(lang, "switch.brief_invalid"))
            return
        fx.write(lambda: engine.store.save_client(cleared))
        chosen = str(pending.get("target"))
        share = answer in YES
        fx.follow(
            "switch",
            client=client.user_id,
            target=chosen,
            share=share,
            cause=item.event_id,
            note_key="switch.done",
            old_notice_key="switch.counselor_notice",
        )
    elif kind == "book":
        number = parse_number(answer)
        if number is not None:
            await booking_flow.reserve(engine, fx, client, pending, number, room)
        else:
            fx.write(lambda: engine.store.save_client(cleared))
            fx.say(room, engine.render.text(lang, "booking.offer_closed"))
    elif kind == "survey":
        eng_id = int(pending.get("engagement", 0))
        if pending.get("step") == "comment":
            comment = None if answer in NO or answer in SKIP else text
            fx.write(lambda: engine.store.record_survey(eng_id, int(pending["score"]), comment))
            fx.write(lambda: engine.store.save_client(cleared))
            fx.say(room, engine.render.text(lang, "survey.thanks"))
            return
        score = parse_number(answer)
        if score is not None and 1 <= score <= 5:
            rec = replace(
                client,
                pending={
                    "kind": "survey",
                    "engagement": eng_id,
                    "score": score,
                    "step": "comment",
                },
            )
            fx.write(lambda: engine.store.save_client(rec))
            fx.say(room, engine.render.text(lang, "survey.comment"))
        elif answer in NO or answer in SKIP:
            fx.write(lambda: engine.store.save_client(cleared))
            fx.say(room, engine.render.text(lang, "survey.thanks"))
        else:
            fx.say(room, engine.render.text(lang, "survey.invalid"))
    else:
        fx.write(lambda: engine.store.save_client(cleared))
        fx.say(room, engine.render.text(lang, "unknown_command"))


ClientHandler = Callable[["Engine", Effects, ClientRecord, str, InboxItem], Awaitable[None]]
CLIENT_COMMANDS: dict[str, ClientHandler] = {
    "help": cmd_help,
    "bantuan": cmd_help,
    "status": cmd_status,
    "counselors": cmd_counselors,
    "konselor": cmd_counselors,
    "switch": cmd_switch,
    "ganti": cmd_switch,
    "urgent": cmd_urgent,
    "darurat": cmd_urgent,
    "erase": cmd_erase,
    "hapus": cmd_erase,
    "language": cmd_language,
    "bahasa": cmd_language,
    "book": booking_flow.cmd_book,
    "pesan": booking_flow.cmd_book,
    "bookings": booking_flow.cmd_bookings,
    "jadwal": booking_flow.cmd_bookings,
    "cancel": booking_flow.cmd_cancel,
    "batal": booking_flow.cmd_cancel,
}
