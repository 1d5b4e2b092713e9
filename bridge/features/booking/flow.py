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

from bridge.kernel import rooms
from bridge.kernel.commands import CLIENT, COUNSELOR, CommandEvent, Commands
from bridge.kernel.timefmt import client_zone, when
from bridge.persistence.bookings import SlotTaken
from bridge.persistence.store import ClientRecord, Counselor, Engagement, iso
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import normalize_command, parse_number

if TYPE_CHECKING:
    from bridge.kernel.context import Context
    from bridge.kernel.effects import Effects

OFFER_SIZE = 6

commands = Commands()


async def _active(ctx: Context, client: ClientRecord) -> tuple[Engagement, Counselor] | None:
    eng = await ctx.store.current_engagement(client.user_id)
    if eng is None or eng.status != "active" or eng.counselor_id is None:
        return None
    counselor = await ctx.store.get_counselor(eng.counselor_id)
    return (eng, counselor) if counselor is not None else None


async def offer_slots(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    eng: Engagement,
    counselor: Counselor,
    room_id: str,
    *,
    prefix: str = "",
) -> None:
    """Show the next free slots, numbered, and remember them as the client's open question."""
    lang = ctx.lang_of(client)
    policy = ctx.policy.service.booking
    free = await ctx.bookings.free_slots(
        counselor.user_id,
        counselor.timezone,
        now=ctx.clock(),
        slot_minutes=policy.slot_minutes,
        horizon_days=policy.horizon_days,
        limit=OFFER_SIZE,
    )
    if not free:
        fx.say(room_id, (prefix + "\n\n" if prefix else "") + ctx.render.text(lang, "booking.none"))
        return
    tz = client_zone(client, counselor)
    options = ctx.render.numbered(lang, [when(s, tz) for s in free])
    pending = {"kind": "book", "engagement": eng.id, "offer": [iso(s) for s in free]}
    rec = replace(client, pending=pending)
    fx.write(lambda: ctx.store.save_client(rec))
    body = ctx.render.text(lang, "booking.slots", options=options)
    fx.say(room_id, (prefix + "\n\n" if prefix else "") + body)


@commands.command(CLIENT, "book", answers=("book",))
async def cmd_book(ev: CommandEvent) -> None:
    ctx, fx, client, args, item = ev.ctx, ev.fx, ev.the_client(), ev.args, ev.item
    lang = ctx.lang_of(client)
    found = await _active(ctx, client)
    if found is None:
        fx.say(item.room_id, ctx.render.text(lang, "booking.none"))
        return
    eng, counselor = found
    number = parse_number(args)
    if number is not None and client.pending and client.pending.get("kind") == "book":
        await reserve(ctx, fx, client, client.pending, number, item.room_id)
        return
    await offer_slots(ctx, fx, client, eng, counselor, item.room_id)


async def reserve(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    pending: dict[str, Any],
    number: int,
    room_id: str,
) -> None:
    """Book the ``number``-th offered slot, or explain why not."""
    lang = ctx.lang_of(client)
    offer = [datetime.fromisoformat(s) for s in pending.get("offer", [])]
    if not 1 <= number <= len(offer):
        fx.say(room_id, ctx.render.text(lang, "booking.invalid", count=len(offer)))
        return
    found = await _active(ctx, client)
    if found is None or found[0].id != pending.get("engagement"):
        fx.write(lambda: ctx.store.save_client(replace(client, pending=None)))
        fx.say(room_id, ctx.render.text(lang, "booking.none"))
        return
    eng, counselor = found
    slot = offer[number - 1]
    minutes = ctx.policy.service.booking.slot_minutes
    mine = [
        b for b in await ctx.bookings.of_engagement(eng.id, now=ctx.clock()) if b.starts_at == slot
    ]
    if mine:
        booking = mine[0]  # a replay of the same request: already ours
    else:
        try:
            booking = await ctx.bookings.book(
                eng.id, counselor.user_id, slot, minutes, now=ctx.clock()
            )
        except SlotTaken:
            taken = ctx.render.text(lang, "booking.taken")
            await offer_slots(ctx, fx, client, eng, counselor, room_id, prefix=taken)
            return
    tz = client_zone(client, counselor)
    cleared = replace(client, pending=None)
    fx.write(lambda: ctx.store.save_client(cleared))
    fx.write(ctx.audit_fn(counselor.user_id, "booking.create", eng.id))
    fx.say(
        room_id,
        ctx.render.text(
            lang,
            "booking.confirmed",
            counselor_name=counselor.name,
            when=when(booking.starts_at, tz),
        ),
    )
    case_room = await ctx.case_room(counselor)
    clang = ctx.counselor_lang(counselor)
    pseudonym = str(client.profile.get("pseudonym") or "?") if eng.share_brief else "—"
    fx.say(
        case_room,
        ctx.render.text(
            clang,
            "booking.counselor_new",
            pseudonym=pseudonym,
            when=when(booking.starts_at, ZoneInfo(counselor.timezone)),
            room_link=rooms.room_link(eng.room_id or ""),
        ),
        reader=counselor.user_id,
        about=client.user_id,
        case=booking_fact(eng, booking.id, booking.starts_at, "booked"),
    )
    # The reminders are job rows, written with the booking's messages.
    with_room = replace(counselor, case_room_id=case_room)
    cadence = ctx.features.cadence
    fx.write(lambda: cadence.on_booked(ctx, booking, eng, with_room))


def booking_fact(eng: Engagement, booking_id: int, start: datetime, status: str) -> CaseEvent:
    """The case-channel fact of a booking note: which booking, when, booked or cancelled."""
    return CaseEvent(
        "booking",
        eng.id,
        eng.room_id,
        {"booking": booking_id, "start": iso(start), "status": status},
    )


@commands.command(CLIENT, "bookings")
async def cmd_bookings(ev: CommandEvent) -> None:
    ev.fx.say(ev.item.room_id, await bookings_text(ev.ctx, ev.the_client()))


@commands.status_part
async def bookings_text(ctx: Context, client: ClientRecord) -> str:
    """The client's booked sessions, for ``status`` and ``bookings``."""
    lang = ctx.lang_of(client)
    found = await _active(ctx, client)
    if found is None:
        return ctx.render.text(lang, "status.no_bookings")
    eng, counselor = found
    upcoming = await ctx.bookings.of_engagement(eng.id, now=ctx.clock())
    if not upcoming:
        return ctx.render.text(lang, "status.no_bookings")
    tz = client_zone(client, counselor)
    lines = [
        ctx.render.text(
            lang,
            "booking.line",
            index=i,
            when=when(b.starts_at, tz),
            counselor_name=counselor.name,
        )
        for i, b in enumerate(upcoming, start=1)
    ]
    return ctx.render.text(lang, "status.bookings", bookings="\n".join(lines))


@commands.command(CLIENT, "cancel")
async def cmd_cancel(ev: CommandEvent) -> None:
    ctx, fx, client, args, item = ev.ctx, ev.fx, ev.the_client(), ev.args, ev.item
    lang = ctx.lang_of(client)
    found = await _active(ctx, client)
    upcoming = []
    if found is not None:
        upcoming = await ctx.bookings.of_engagement(found[0].id, now=ctx.clock())
    if not upcoming:
        fx.say(item.room_id, ctx.render.text(lang, "booking.nothing_to_cancel"))
        return
    pick = parse_number(args) if args.strip() else (1 if len(upcoming) == 1 else 0)
    pick = pick or 0
    if not 1 <= pick <= len(upcoming):
        fx.say(item.room_id, ctx.render.text(lang, "booking.invalid", count=len(upcoming)))
        return
    assert found is not None
    eng, counselor = found
    booking = upcoming[pick - 1]
    bookings = ctx.bookings
    fx.write(lambda: bookings.cancel(booking.id, now=ctx.clock()))
    fx.write(ctx.audit_fn(client.user_id, "booking.cancel", eng.id))
    tz = client_zone(client, counselor)
    fx.say(
        item.room_id,
        ctx.render.text(lang, "booking.cancelled", when=when(booking.starts_at, tz)),
    )
    if counselor.case_room_id:
        fx.say(
            counselor.case_room_id,
            ctx.render.text(
                ctx.counselor_lang(counselor),
                "booking.counselor_cancelled",
                when=when(booking.starts_at, ZoneInfo(counselor.timezone)),
                room_link=rooms.room_link(eng.room_id or ""),
            ),
            reader=counselor.user_id,
            case=booking_fact(eng, booking.id, booking.starts_at, "cancelled"),
        )
    cadence = ctx.features.cadence
    fx.write(lambda: cadence.on_cancelled(ctx, booking.id))


async def answer_in_session(
    ctx: Context, fx: Effects, client: ClientRecord, text: str, room_id: str
) -> bool:
    """A client answering an open booking offer in the session room ("2", "book 2")."""
    pending = client.pending
    if not pending or pending.get("kind") != "book":
        return False
    word, args = normalize_command(text)
    number = parse_number(word) if not args else None
    command = ctx.commands.find(ctx, CLIENT, word, ctx.lang_of(client))
    if number is None and command is not None and command.id == "book":
        number = parse_number(args)
    if number is None:
        return False
    await reserve(ctx, fx, client, pending, number, room_id)
    return True


@commands.answer("book")
async def answer_offer(ev: CommandEvent) -> None:
    """The client's pick among the offered times."""
    client = ev.the_client()
    number = parse_number(ev.answer)
    if number is not None:
        await reserve(ev.ctx, ev.fx, client, dict(ev.pending or {}), number, ev.reply_room)
        return
    cleared = replace(client, pending=None)
    ev.fx.write(lambda: ev.ctx.store.save_client(cleared))
    ev.say("booking.offer_closed")


@commands.command(COUNSELOR, "book", case=True)
async def counselor_book(ev: CommandEvent) -> None:
    """``!book``: offer the client the next free slots, in their session room."""
    eng, counselor = ev.the_case()
    if ev.client is None or eng.room_id is None:
        ev.reply("booking.none", ok=False)
        return
    await offer_slots(ev.ctx, ev.fx, ev.client, eng, counselor, eng.room_id)
    ev.reply("booking.offered")
