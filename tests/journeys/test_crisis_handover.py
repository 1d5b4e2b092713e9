"""A client in crisis mid-intake is reached by a person: page, ``!take``, a room together.

The page carries a number and no content; the first on-call counselor (or supervisor) to
answer it with ``!take`` is put in a room with the client, the client is told who is there,
and everyone else who was paged learns that the page is taken.
"""

from __future__ import annotations

import asyncio

from tests.integration.bridgekit import (
    POLICY,
    Chat,
    answer_country,
    bot_event_ids,
    fetch_event,
    membership,
    open_dm,
    seat_client,
    text,
    walk_intake,
)
from tests.integration.matrixkit import until
from tests.journeys.conftest import Contents, case_channel, eventually, hire, poll

COUNTRY = POLICY.crisis.countries[0].code


async def to_pseudonym_step(dm: Chat) -> None:
    await dm.expect(lambda b: "Welcome to" in b)
    await dm.send("1")
    await dm.expect(lambda b: "agree" in b and "decline" in b)
    await dm.send("agree")
    await dm.expect(text("en", "intake.age", min_age=18))
    await dm.send("yes")
    await dm.expect(lambda b: POLICY.crisis.countries[0].label["en"] in b)
    await answer_country(dm, "en")  # up to the pseudonym question


async def test_urgent_mid_intake_page_take_and_the_taker_reads_the_client(bot, people):
    ana = await people("ana")
    budi = await people("budi")
    await hire(bot, ana, "Ana", on_call=True)
    await hire(bot, budi, "Budi", on_call=True)
    ana_sees = Contents(ana)
    client = await people("client")
    dm = await open_dm(client, bot.user_id)
    await to_pseudonym_step(dm)

    await dm.send("urgent")
    reply = await dm.expect(lambda b: POLICY.crisis_reply("en", COUNTRY).strip()[:80] in b)
    assert reply.endswith(text("en", "crisis.paged")), "the client is told the team was alerted"
    page = await eventually(bot.bridge.ctx.pages.newest_open, what="the page row")
    ana_case = await case_channel(bot, ana)
    budi_case = await case_channel(bot, budi)
    await ana_case.expect(text("en", "page.urgent", page=page.id))
    await budi_case.expect(text("en", "page.urgent", page=page.id))

    # The page carries what Ana needs to act, machine-readable, and nothing the client wrote.
    await until(lambda: ana_sees.cases(ana_case.room_id, "page"), what="the page fact")
    fact = ana_sees.cases(ana_case.room_id, "page")[-1]
    assert fact["data"]["page"] == page.id and fact["data"]["reason"] == "command:urgent"
    assert fact["data"]["client_room"] == dm.room_id and fact.get("engagement") is None
    mentions = [c.get("m.mentions") for r, _s, c in ana_sees.seen if r == ana_case.room_id]
    assert {"user_ids": [ana.session.user_id]} in mentions

    # Ana takes it: she and the client get a new encrypted room together.
    await until(lambda: ana.joined(ana_case.room_id, ana.session.user_id), what="Ana's channel")
    await ana.session.send_text(ana_case.room_id, f"!take {page.id}")
    done = await ana_case.expect(lambda b: b.startswith(f"Page {page.id}") or "You have page" in b)
    taken = await bot.bridge.ctx.pages.get(page.id)
    assert taken.taken_by == ana.session.user_id and taken.room_id is not None
    assert taken.room_id in done
    await dm.expect(text("en", "take.client_invited", name="Ana"))
    room = taken.room_id
    await until(lambda: client.joined(room, client.session.user_id), what="client joins")
    await until(lambda: ana.joined(room, ana.session.user_id), what="Ana joins")
    await Chat(client, room, bot.user_id).expect(lambda b: b.startswith("Ana from the team"))
    await budi_case.expect(text("en", "page.taken", page_id=page.id, name="Ana"))

    # Ana reads what the client writes there (decrypted on her device).
    words = "I am scared and alone right now"
    await client.session.send_text(room, words)
    await until(lambda: words in ana.bodies(room), what="Ana reads the client")
    assert ana.undecryptable == []

    # Budi answering the same page changes nothing and gets a polite answer.
    await until(lambda: budi.joined(budi_case.room_id, budi.session.user_id), what="Budi")
    await budi.session.send_text(budi_case.room_id, f"!take {page.id}")
    await budi_case.expect(text("en", "take.already", page_id=page.id, name="Ana"))
    again = await bot.bridge.ctx.pages.get(page.id)
    assert again.taken_by == ana.session.user_id and again.room_id == room
    assert not budi.joined(room, budi.session.user_id)
    # Ana asking again is told where she is; the client is not invited twice.
    invited = text("en", "take.client_invited", name="Ana")
    await ana.session.send_text(ana_case.room_id, f"!take {page.id}")
    await ana_case.expect(lambda b: b.startswith(f"You have page {page.id}") and room in b)
    await dm.quiet(1.0)
    assert dm.bot_messages().count(invited) == 1
    # The intake is still where it was.
    assert (await bot.bridge.store.get_client(client.session.user_id)).profile.get("crisis")


async def test_two_takes_at_once_give_the_page_to_exactly_one(bot):
    pages = bot.bridge.ctx.pages
    page_id = await pages.open(
        cause="race", client_id="@c:x", engagement_id=None, reason="command:urgent"
    )
    wins = await asyncio.gather(*(pages.take(page_id, f"@p{i}:x") for i in range(8)))
    assert sum(wins) == 1
    assert (await pages.get(page_id)).taken_by == f"@p{wins.index(True)}:x"


async def test_nobody_to_page_means_the_client_is_not_told_anyone_was_alerted(bot, people):
    client = await people("client")
    dm = await open_dm(client, bot.user_id)
    await to_pseudonym_step(dm)
    await dm.send("urgent")
    reply = await dm.expect(lambda b: POLICY.crisis_reply("en", COUNTRY).strip()[:80] in b)
    assert reply.endswith(text("en", "crisis.not_paged"))
    assert text("en", "crisis.paged") not in reply
    assert await bot.bridge.ctx.pages.newest_open() is None


async def supervisors_room(bot, who, name: str) -> Chat:
    """Make ``who`` a supervisor; the bridge makes the room once and invites them (they accept)."""
    pages = bot.bridge.ctx.pages
    await pages.add_supervisor(who.session.user_id, name)
    room = await eventually(pages.supervisors_room, what="the supervisors' room")
    await until(lambda: who.joined(room, who.session.user_id), what=f"{name} joins")
    sup = Chat(who, str(room), bot.user_id)
    await sup.expect(text("en", "supervisors.welcome"))
    return sup


async def test_supervisors_get_a_room_of_their_own_and_take_pages_there(bot, people):
    sari = await people("sari")
    other = await people("other")
    pages = bot.bridge.ctx.pages
    sup = await supervisors_room(bot, sari, "Sari")

    client = await people("client")
    dm = await open_dm(client, bot.user_id)
    await to_pseudonym_step(dm)
    await dm.send("I want to kill myself")
    page = await eventually(pages.newest_open, what="the page")
    await sup.expect(text("en", "page.crisis", page=page.id))
    await sari.session.send_text(sup.room_id, f"!take {page.id}")
    await sup.expect(lambda b: b.startswith(text("en", "take.done", page_id=page.id, room_link="")))
    taken = await pages.get(page.id)
    assert taken.taken_by == sari.session.user_id
    await dm.expect(text("en", "take.client_invited", name="Sari"))
    await until(lambda: sari.joined(taken.room_id, sari.session.user_id), what="Sari with client")

    # Someone who is not a supervisor gets nothing from the supervisors' room.
    resp = await bot.bridge.session.client.room_invite(sup.room_id, other.session.user_id)
    assert not hasattr(resp, "status_code"), resp
    await until(lambda: other.joined(sup.room_id, other.session.user_id), what="other joins")
    await other.session.send_text(sup.room_id, "!queue")
    await sup.expect(text("en", "not_allowed"))

    # Removed from the list: removed from the room (and so is anyone else not on it).
    await pages.remove_supervisor(sari.session.user_id)

    async def gone() -> bool:
        path = f"/_matrix/client/v3/rooms/{sup.room_id}/state/m.room.member/"
        memberships = []
        for who in (sari, other):
            status, body = await bot.bridge.session.raw("GET", path + who.session.user_id)
            memberships.append(body.get("membership") if status == 200 else None)
        return memberships == ["leave", "leave"]

    await eventually(gone, what="Sari and the other person removed")


async def test_a_page_about_a_seated_client_brings_the_taker_into_the_session_room(bot, people):
    ana = await people("ana")
    budi = await people("budi")
    await hire(bot, ana, "Ana")
    await hire(bot, budi, "Budi", on_call=True)
    client = await people("client")
    seated = await seat_client(bot, client, "Ana")
    room = seated.room.room_id

    await seated.dm.send("urgent")
    page = await eventually(bot.bridge.ctx.pages.newest_open, what="the page")
    budi_case = await case_channel(bot, budi)
    ana_case = await case_channel(bot, ana)
    await budi_case.expect(text("en", "page.urgent", page=page.id))
    await until(lambda: budi.joined(budi_case.room_id, budi.session.user_id), what="Budi")
    await budi.session.send_text(budi_case.room_id, f"!take {page.id}")
    await budi_case.expect(text("en", "take.done", page_id=page.id, room_link=link(room)))

    # Budi is in the client's own room, with a counselor's power; the client is told.
    await until(lambda: budi.joined(room, budi.session.user_id), what="Budi joins the room")
    await seated.room.expect(text("en", "take.client_joined", name="Budi"))
    status, levels = await bot.bridge.session.raw(
        "GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"
    )
    assert status == 200 and levels["users"][budi.session.user_id] == 50
    await ana_case.expect(text("en", "page.taken", page_id=page.id, name="Budi"))
    words = "thank you for coming"
    await client.session.send_text(room, words)
    await until(lambda: words in budi.bodies(room), what="Budi reads the client")
    eng = await bot.bridge.store.current_engagement(seated.user_id)
    assert eng.counselor_id == ana.session.user_id, "the client keeps their counselor"


def link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"


async def test_erase_clears_the_room_a_page_was_taken_in(bot, people):
    # A client on the waiting list pages; a supervisor takes it and meets the
    # client in a room made for the page. Erasing must clear that room too.
    sari = await people("sari")
    pages = bot.bridge.ctx.pages
    sup = await supervisors_room(bot, sari, "Sari")
    client = await people("client")
    dm = await open_dm(client, bot.user_id)
    await walk_intake(dm)
    await dm.send("auto")
    await dm.expect(text("en", "intake.waitlisted", position=1))
    await dm.send("urgent")
    page = await eventually(pages.newest_open, what="the page")
    await sup.expect(text("en", "page.urgent", page=page.id))
    await sari.session.send_text(sup.room_id, f"!take {page.id}")
    await dm.expect(text("en", "take.client_invited", name="Sari"))
    room = (await pages.get(page.id)).room_id
    await until(lambda: client.joined(room, client.session.user_id), what="client joins")
    await until(lambda: sari.joined(room, sari.session.user_id), what="Sari joins")
    await Chat(client, room, bot.user_id).expect(lambda b: b.startswith("Sari from the team"))
    intro = bot_event_ids(client, room, bot.user_id)
    assert intro

    await dm.send("erase")
    await dm.expect(text("en", "erase.confirm"))
    await dm.send("yes")
    await dm.expect(text("en", "erase.done"))

    async def cleared() -> bool:
        return (
            await membership(client, room, sari.session.user_id) == "leave"
            and await membership(client, room, bot.user_id) == "leave"
        )

    await poll(cleared, what="the taker removed and the bot gone from the page's room")
    for event_id in intro:
        assert not (await fetch_event(client, room, event_id)).get("content"), "not redacted"
    store = bot.bridge.store
    assert await store.get_client(client.session.user_id) is None
    await poll(lambda: _none_pending(store), what="every clean-up done")
    assert await store.page_rooms(client.session.user_id) == []
    assert not await pages.is_page_room(room)


async def _none_pending(store) -> bool:
    return await store.pending_followups() == 0
