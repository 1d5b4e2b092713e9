"""A counselor works a case from the case channel; the client never reads a command or a note.

The counselor names the case by its number. A command typed into the session room (from
Element, say) still works for that room's client, but the bot takes it out of the room and
answers in the case channel only.
"""

from __future__ import annotations

from tests.integration.bridgekit import help_text, seat_client, text
from tests.integration.matrixkit import until
from tests.journeys.conftest import Contents, case_channel, eventually, hire, redacted

NOTE = "suspected-trauma-canary-7f3"


async def test_counselor_commands_never_reach_the_client(bot, people):
    ana = await people("ana")
    await hire(bot, ana, "Ana")
    ana_sees = Contents(ana)
    client = await people("client")
    seated = await seat_client(bot, client, "Ana", pseudonym="Wren")
    store = bot.bridge.store
    eng = await store.current_engagement(seated.user_id)
    case = await case_channel(bot, ana)
    await until(lambda: ana.joined(case.room_id, ana.session.user_id), what="Ana in her channel")
    say = ana.session.send_text

    # Her cases, by number; a command without a number, or with someone else's, changes nothing.
    await say(case.room_id, "!cases")
    await case.expect(lambda b: f"Case {eng.id}: Wren" in b)
    await say(case.room_id, "!risk high")
    await case.expect(text("en", "case.number_needed", command="risk"))
    await say(case.room_id, f"!risk {eng.id + 1000} high")
    await case.expect(text("en", "case.unknown", number=eng.id + 1000))
    assert (await store.get_engagement(eng.id)).risk == "low"

    # The risk, set from the case channel, with the fact the counselor app reads.
    await say(case.room_id, f"!risk {eng.id} medium")
    await case.expect(text("en", "risk.set", level=text("en", "risk.medium")))
    assert (await store.get_engagement(eng.id)).risk == "medium"
    await until(lambda: ana_sees.cases(case.room_id, "risk"), what="the risk fact")
    fact = ana_sees.cases(case.room_id, "risk")[-1]
    assert fact["engagement"] == eng.id and fact["data"] == {"risk": "medium"}
    assert fact["room"] == eng.room_id

    # Typed in the session room: carried out, taken out of the room, answered privately.
    await until(lambda: ana.joined(eng.room_id, ana.session.user_id), what="Ana in the room")
    typed = await say(eng.room_id, "!risk high")
    await case.expect(text("en", "risk.set", level=text("en", "risk.high")))
    assert (await store.get_engagement(eng.id)).risk == "high"
    await eventually(lambda: redacted(client, eng.room_id, typed), what="the command redacted")
    assert text("en", "risk.set", level=text("en", "risk.high")) not in seated.room.bot_messages()

    # Closing with a note: the client reads the outcome, never the note.
    await say(case.room_id, f"!close {eng.id} refer {NOTE}")
    await seated.room.expect(text("en", "close.refer", counselor_name="Ana"))
    await case.expect(text("en", "close.done", outcome="refer"))
    await seated.dm.expect(text("en", "survey.ask"))
    assert (await store.get_engagement(eng.id)).outcome == "refer"
    await until(lambda: ana_sees.cases(case.room_id, "closed"), what="the closed fact")
    closed = ana_sees.cases(case.room_id, "closed")[-1]
    assert closed["engagement"] == eng.id and closed["data"] == {"outcome": "refer"}

    # What the client's own app decrypted, in every room: no command, no note, no clinical reply.
    from_bot = client.bodies(sender=bot.user_id)
    assert all(NOTE not in body for body in client.bodies())
    for key, params in (
        ("risk.set", {"level": text("en", "risk.medium")}),
        ("risk.set", {"level": text("en", "risk.high")}),
        ("close.done", {"outcome": "refer"}),
        ("case.unknown", {"number": eng.id + 1000}),
    ):
        assert text("en", key, **params) not in from_bot
    # The one "!" line the client's app saw is the one Ana typed into their room: redacted.
    typed_there = [m for m in client.messages if m.body.startswith("!")]
    assert [m.event_id for m in typed_there] in ([], [typed])
    assert all("Case " not in b for b in from_bot)
    assert help_text("counselor") not in from_bot
