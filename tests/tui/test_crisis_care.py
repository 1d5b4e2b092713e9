"""A crisis check answered "no" and an active crisis, as the counselor lives them,
against a real Synapse with real E2EE clients (Pilot): the bot-like account sends
the case events the bridge sends."""

from __future__ import annotations

import pytest

from tests.tui.test_care import record
from tests.tui.world import (
    counselor_app,
    make_world,
    queue_ids,
    queue_row,
    wait_app,
    with_client,
)
from tui.app import URGENT_MARK
from tui.panes import TextPane
from tui.queue import CHECK_NO


@pytest.fixture
async def world(homeserver, tmp_path):
    w = await make_world(homeserver, tmp_path)
    yield w
    await w.close()


def card(app) -> str:
    return str(app.query_one("#card", TextPane).content)


async def test_a_no_to_the_crisis_check_is_flagged_and_survives_a_restart(world):
    async with counselor_app(world) as (app, pilot):
        bells = record(app, "bell")
        toasts = record(app, "notify")
        waiting = await with_client(world, pilot, "Ana")
        await world.clients[waiting].session.send_text(waiting, "are you there?")
        asked = await world.add_client("Budi")
        await wait_app(pilot, lambda: queue_ids(app) == [waiting, asked], what="Ana waits")
        rung = len(bells)

        await world.bot.session.send(
            world.case_room,
            {
                "msgtype": "m.text",
                "body": "A client answered no to the crisis check question.",
                "org.e2ecounsel.case": {
                    "v": 1,
                    "kind": "flag",
                    "engagement": world.engagements[asked],
                    "room": asked,
                    "data": {"reason": CHECK_NO},
                },
            },
        )
        await wait_app(pilot, lambda: queue_ids(app) == [asked, waiting], what="flag on top")
        assert "⚑ asked: no" in queue_row(app, asked) and "⚑" not in queue_row(app, waiting)
        assert len(bells) == rung + 1
        assert any("answered no to the crisis check" in t for t in toasts)
        # A brief written after a "no" during intake says the same.
        intake = await world.add_client("Cita", flags=(CHECK_NO,))
        await wait_app(pilot, lambda: intake in queue_ids(app), what="Cita in the queue")
        assert queue_ids(app).index(intake) < queue_ids(app).index(waiting)
        assert "⚑ asked: no" in queue_row(app, intake)
        app.open_room(asked)
        await pilot.pause()
        assert "asked the crisis check question" in card(app) and "said no" in card(app)

    # The app starts again: the flags come back from the case channel's history.
    async with counselor_app(world) as (app, pilot):
        await wait_app(
            pilot,
            lambda: app.history_loaded and set(queue_ids(app)) == {asked, intake, waiting},
            what="the queue after a restart",
        )
        await wait_app(
            pilot,
            lambda: queue_ids(app)[-1] == waiting and "⚑ asked: no" in queue_row(app, asked),
            what="the flags read from history",
        )
        assert "⚑ asked: no" in queue_row(app, intake)
        app.open_room(intake)
        await pilot.pause()
        assert "said no: during intake" in card(app)
        app.open_room(asked)
        await pilot.pause()
        assert "said no" in card(app) and "during intake" not in card(app)


async def test_every_message_in_an_active_crisis_rings_as_urgent(world):
    async with counselor_app(world) as (app, pilot):
        bells = record(app, "bell")
        toasts = record(app, "notify")
        calm = await with_client(world, pilot, "Calm")
        room = await world.add_client("Dian")
        client = world.clients[room].session
        await world.clients[calm].session.send_text(calm, "a question for later")
        await world.send_case("page", room, {"page": 3, "reason": "crisis"})
        await wait_app(
            pilot, lambda: queue_ids(app) == ["page:3", room, calm], what="the page on top"
        )
        await world.send_case("take", room, {"page": 3, "by": "@oncall:srv"})
        await wait_app(pilot, lambda: queue_ids(app) == [room, calm], what="page taken")
        assert "‼" in queue_row(app, room)

        # The counselor is in Dian's thread, replying: a normal message would not
        # ring, but Dian is in an active crisis (risk high) and the bot sends no
        # new page for every message.
        app.open_room(room, focus_composer=True)
        rung = len(bells)
        for n, words in enumerate(("i can't anymore", "still here"), start=1):
            await client.send_text(room, words)
            await wait_app(pilot, lambda n=n: len(bells) == rung + n, what=f"bell {n}")
            assert any(t.startswith("Urgent: new message from Dian") for t in toasts)
            thread = app.thread_text()
            assert thread.plain.count(URGENT_MARK) == n and f"‼ {words}" in thread.plain
        assert queue_ids(app) == [room, calm]

        # The counselor sets the risk down: the next message is an ordinary one.
        await world.send_case("risk", room, {"risk": "low"})
        await wait_app(pilot, lambda: not app.link.entry(room).urgent, what="risk low")
        await client.send_text(room, "thank you, better now")
        await wait_app(
            pilot,
            lambda: "better now" in app.thread_text().plain,
            what="the calm message shown",
        )
        await pilot.pause(0.3)
        assert len(bells) == rung + 2
        assert "‼ thank you" not in app.thread_text().plain
