"""Booking live sessions through chat: ``book``, ``book N``, ``bookings``,
``cancel N`` for the client (the counselor's ``!book N`` offers the slots).

Times are shown in the client's zone (from their country) with the zone's
name, so "14:00" is never ambiguous. Reserving a slot is the database's
decision (a unique index): when two clients take the same slot at once, one
wins and the other is shown the next free slots.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bridge import rooms
from bridge.cadence import Cadence, client_zone
from bridge.persistence.bookings import SlotTaken
from bridge.persistence.store import ClientRecord, Counselor, Engagement, iso
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import normalize_command, parse_number

if TYPE_CHECKING:
    from bridge.effects import Effects
    from bridge.engine import Engine
    from bridge.persistence.inbox import InboxItem

OFFER_SIZE = 6


async def _active(engine: Engine, client: ClientRecord) -> tuple[Engagement, Counselor] | None:
    eng = await engine.store.current_engagement(client.user_id)
    if eng is None or eng.status != "active" or eng.counselor_id is None:
        return None
    counselor = await engine.store.get_counselor(eng.counselor_id)
    return (eng, counselor) if counselor is not None else None


async def offer_slots(
    engine: Engine,
    fx: Effects,
    client: ClientRecord,
    eng: Engagement,
    counselor: Counselor,
    room_id: str,
    *,
    prefix: str = "",
) -> None:
    """Show the next free slots, numbered, and remember them as the client's open question."""
    lang = engine.lang_of(client)
    assert engine.bookings is not None
    policy = engine.policy.service.booking
    free = await engine.bookings.free_slots(
        counselor.user_id,
        counselor.timezone,
        now=engine.clock(),
        slot_minutes=policy.slot_minutes,
        horizon_days=policy.horizon_days,
        limit=OFFER_SIZE,
    )
    if not free:
        fx.say(
            room_id, (prefix + "\n\n" if prefix else "") + engine.render.text(lang, "booking.none")
        )
        return
    tz = client_zone(client, counselor)
    options = engine.render.numbered(lang, [Cadence.when(s, tz) for s in free])
    pending = {"kind": "book", "engagement": eng.id, "offer": [iso(s) for s in free]}
    rec = replace(client, pending=pending)
    fx.write(lambda: engine.store.save_client(rec))
    body = engine.render.text(lang, "booking.slots", options=options)
    fx.say(room_id, (prefix + "\n\n" if prefix else "") + body)


async def cmd_book(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    lang = engine.lang_of(client)
    found = await _active(engine, client)
    if found is None:
        fx.say(item.room_id, engine.render.text(lang, "booking.none"))
        return
    eng, counselor = found
    number = parse_number(args)
    if number is not None and client.pending and client.pending.get("kind") == "book":
        await reserve(engine, fx, client, client.pending, number, item.room_id)
        return
    await offer_slots(engine, fx, client, eng, counselor, item.room_id)


async def reserve(
    engine: Engine,
    fx: Effects,
    client: ClientRecord,
    pending: dict[str, Any],
    number: int,
    room_id: str,
) -> None:
    """Book the ``number``-th offered slot, or explain why not."""
    lang = engine.lang_of(client)
    offer = [datetime.fromisoformat(s) for s in pending.get("offer", [])]
    if not 1 <= number <= len(offer):
        fx.say(room_id, engine.render.text(lang, "booking.invalid", count=len(offer)))
        return
    found = await _active(engine, client)
    if found is None or found[0].id != pending.get("engagement"):
        fx.write(lambda: engine.store.save_client(replace(client, pending=None)))
        fx.say(room_id, engine.render.text(lang, "booking.none"))
        return
    eng, counselor = found
    assert engine.bookings is not None
    slot = offer[number - 1]
    minutes = engine.policy.service.booking.slot_minutes
    mine = [
        b
        for b in await engine.bookings.of_engagement(eng.id, now=engine.clock())
        if b.starts_at == slot
    ]
    if mine:
        booking = mine[0]  # a replay of the same request: already ours
    else:
        try:
            booking = await engine.bookings.book(
                eng.id, counselor.user_id, slot, minutes, now=engine.clock()
            )
        except SlotTaken:
            taken = engine.render.text(lang, "booking.taken")
            await offer_slots(engine, fx, client, eng, counselor, room_id, prefix=taken)
            return
    tz = client_zone(client, counselor)
    cleared = replace(client, pending=None)
    fx.write(lambda: engine.store.save_client(cleared))
    fx.write(engine.audit_fn(counselor.user_id, "booking.create", eng.id))
    fx.say(
        room_id,
        engine.render.text(
            lang,
            "booking.confirmed",
            counselor_name=counselor.name,
            when=Cadence.when(booking.starts_at, tz),
        ),
    )
    case_room = await engine.case_room(counselor)
    clang = engine.counselor_lang(counselor)
    pseudonym = str(client.profile.get("pseudonym") or "?") if eng.share_brief else "—"
    fx.say(
        case_room,
        engine.render.text(
            clang,
            "booking.counselor_new",
            pseudonym=pseudonym,
            when=Cadence.when(booking.starts_at, ZoneInfo(counselor.timezone)),
            room_link=rooms.room_link(eng.room_id or ""),
        ),
        reader=counselor.user_id,
        about=client.user_id,
        case=booking_fact(eng, booking.id, booking.starts_at, "booked"),
    )
    if engine.cadence is not None:
        cadence = engine.cadence
        # The reminders are job rows, written with the booking's messages.
        with_room = replace(counselor, case_room_id=case_room)
        fx.write(lambda: cadence.on_booked(booking, eng, with_room))


def booking_fact(eng: Engagement, booking_id: int, start: datetime, status: str) -> CaseEvent:
    """The case-channel fact of a booking note: which booking, when, booked or cancelled."""
    return CaseEvent(
        "booking",
        eng.id,
        eng.room_id,
        {"booking": booking_id, "start": iso(start), "status": status},
    )


async def cmd_bookings(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    fx.say(item.room_id, await bookings_text(engine, client))


async def bookings_text(engine: Engine, client: ClientRecord) -> str:
    lang = engine.lang_of(client)
    found = await _active(engine, client)
    if found is None or engine.bookings is None:
        return engine.render.text(lang, "status.no_bookings")
    eng, counselor = found
    upcoming = await engine.bookings.of_engagement(eng.id, now=engine.clock())
    if not upcoming:
        return engine.render.text(lang, "status.no_bookings")
    tz = client_zone(client, counselor)
    lines = [
        engine.render.text(
            lang,
            "booking.line",
            index=i,
            when=Cadence.when(b.starts_at, tz),
            counselor_name=counselor.name,
        )
        for i, b in enumerate(upcoming, start=1)
    ]
    return engine.render.text(lang, "status.bookings", bookings="\n".join(lines))


async def cmd_cancel(
    engine: Engine, fx: Effects, client: ClientRecord, args: str, item: InboxItem
) -> None:
    lang = engine.lang_of(client)
    found = await _active(engine, client)
    upcoming = []
    if found is not None and engine.bookings is not None:
        upcoming = await engine.bookings.of_engagement(found[0].id, now=engine.clock())
    if not upcoming:
        fx.say(item.room_id, engine.render.text(lang, "booking.nothing_to_cancel"))
        return
    pick = parse_number(args) if args.strip() else (1 if len(upcoming) == 1 else 0)
    pick = pick or 0
    if not 1 <= pick <= len(upcoming):
        fx.say(item.room_id, engine.render.text(lang, "booking.invalid", count=len(upcoming)))
        return
    assert found is not None and engine.bookings is not None
    eng, counselor = found
    booking = upcoming[pick - 1]
    bookings = engine.bookings
    fx.write(lambda: bookings.cancel(booking.id, now=engine.clock()))
    fx.write(engine.audit_fn(client.user_id, "booking.cancel", eng.id))
    tz = client_zone(client, counselor)
    fx.say(
        item.room_id,
        engine.render.text(lang, "booking.cancelled", when=Cadence.when(booking.starts_at, tz)),
    )
    if counselor.case_room_id:
        fx.say(
            counselor.case_room_id,
            engine.render.text(
                engine.counselor_lang(counselor),
                "booking.counselor_cancelled",
                when=Cadence.when(booking.starts_at, ZoneInfo(counselor.timezone)),
                room_link=rooms.room_link(eng.room_id or ""),
            ),
            reader=counselor.user_id,
            case=booking_fact(eng, booking.id, booking.starts_at, "cancelled"),
        )
    if engine.cadence is not None:
        cadence = engine.cadence
        fx.write(lambda: cadence.on_cancelled(booking.id))


async def answer_in_session(
    engine: Engine, fx: Effects, client: ClientRecord, text: str, room_id: str
) -> bool:
    """A client answering an open booking offer in the session room ("2", "book 2")."""
    pending = client.pending
    if not pending or pending.get("kind") != "book":
        return False
    word, args = normalize_command(text)
    number = parse_number(word) if not args else None
    if number is None and word in ("book", "pesan"):
        number = parse_number(args)
    if number is None:
        return False
    await reserve(engine, fx, client, pending, number, room_id)
    return True
