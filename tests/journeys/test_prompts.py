"""Global commands are never swallowed by an open question, and ``book N`` books slot N.

The counselor offers live-session times from the case channel; the client, with that offer
open, still gets ``status`` and ``help``; ``book 2`` books the second time; ``erase`` with an
offer open asks to erase (it is not taken as "no booking").
"""

from __future__ import annotations

from bridge.persistence.store import iso
from tests.integration.bridgekit import consent_start, help_text, open_dm, seat_client, text
from tests.integration.matrixkit import until
from tests.journeys.conftest import case_channel, eventually, hire


async def test_erase_status_help_and_book_n_with_an_offer_open(bot, people):
    ana = await people("ana")
    await hire(bot, ana, "Ana")
    await bot.bridge.ctx.bookings.set_schedule(
        ana.session.user_id, availability="mon-sun 00:00-23:59", days_off=""
    )
    client = await people("client")
    seated = await seat_client(bot, client, "Ana")
    store = bot.bridge.store
    eng = await store.current_engagement(seated.user_id)
    case = await case_channel(bot, ana)
    await until(lambda: ana.joined(case.room_id, ana.session.user_id), what="Ana's channel")

    async def offer() -> None:
        await ana.session.send_text(case.room_id, f"!book {eng.id}")
        await case.expect(text("en", "booking.offered"))
        await seated.room.expect(lambda b: b.startswith("Available times"))
        await eventually(
            lambda: _pending_kind(store, seated.user_id, "book"), what="the offer is open"
        )

    await offer()
    dm = seated.dm
    credentials = (await store.get_counselor(ana.session.user_id)).credentials
    active = text("en", "status.active", counselor_name="Ana", credentials=credentials)
    await dm.send("status")
    await dm.expect(lambda b: b.startswith(active))
    await dm.send("help")
    await dm.expect(help_text("client"))
    # "book 2" books the second slot offered (not "nothing was booked").
    second = (await store.get_client(seated.user_id)).pending["offer"][1]
    await dm.send("book 2")
    confirmed = await dm.expect(lambda b: b.startswith("Booked: a live session with Ana"))
    booked = await bot.bridge.ctx.bookings.of_engagement(eng.id, now=bot.bridge.clock())
    assert len(booked) == 1 and iso(booked[0].starts_at) == second
    rec = await store.get_client(seated.user_id)
    assert rec.pending is None
    assert text("en", "booking.offer_closed") not in dm.bot_messages()
    assert confirmed

    # With a new offer open, "erase" asks to erase, and "yes" erases.
    await offer()
    await dm.send("erase")
    await dm.expect(text("en", "erase.confirm"))
    await dm.send("yes")
    await dm.expect(text("en", "erase.done"))
    await eventually(lambda: _gone(store, seated.user_id), what="the client is erased")
    assert text("en", "booking.offer_closed") not in dm.bot_messages()


async def _pending_kind(store, user_id: str, kind: str) -> bool:
    rec = await store.get_client(user_id)
    return rec is not None and rec.pending is not None and rec.pending.get("kind") == kind


async def _gone(store, user_id: str) -> bool:
    return await store.get_client(user_id) is None


async def test_erase_status_and_help_in_the_middle_of_the_intake(bot, people):
    """Half-way through signing up, the global commands still work and are no answers."""
    client = await people("client")
    dm = await open_dm(client, bot.user_id)
    await dm.send("hi")
    await dm.expect(lambda b: "Welcome to" in b)
    await dm.send("1")
    await dm.expect(lambda b: consent_start("en") in b)
    await dm.send("agree")
    await dm.expect(text("en", "intake.age", min_age=18))
    store = bot.bridge.store
    before = (await store.get_client(client.session.user_id)).intake

    await dm.send("status")
    await dm.expect(text("en", "status.intake"))
    await dm.send("help")
    await dm.expect(help_text("client"))
    assert (await store.get_client(client.session.user_id)).intake == before
    await dm.send("erase")
    await dm.expect(text("en", "erase.confirm"))
    await dm.send("yes")
    await dm.expect(text("en", "erase.done"))
    await eventually(
        lambda: _gone(store, client.session.user_id), what="the client's record is deleted"
    )


async def _gone(store, user_id: str) -> bool:
    return await store.get_client(user_id) is None
