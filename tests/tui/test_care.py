"""The care loop as a counselor lives it, against a real Synapse with real E2EE
clients (Pilot): signing in hours after clients were assigned, crisis pages,
commands that stay private, and a composer that keeps what is typed."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Static, TextArea

import tui.link
from e2ecounsel.errors import MatrixError
from tests.integration.matrixkit import until
from tests.tui.world import (
    counselor_app,
    make_world,
    queue_ids,
    queue_row,
    wait_app,
    with_client,
)
from tui.app import CounselorApp
from tui.notes import NoteBook
from tui.panes import QueueView, TextPane


@pytest.fixture
async def world(homeserver, tmp_path):
    w = await make_world(homeserver, tmp_path)
    yield w
    await w.close()


def record(app, name: str) -> list[str]:
    """Wrap one of the app's methods and record its first argument (or a call)."""
    calls: list[str] = []
    real = getattr(app, name)

    def wrapped(*args, **kwargs):
        calls.append(str(args[0]) if args else name)
        return real(*args, **kwargs)

    setattr(app, name, wrapped)
    return calls


async def test_a_late_counselor_sees_every_assigned_client(world):
    # The counselor's device exists (signed in once), but the app is not running
    # while the bot opens the case channel, assigns two clients and one writes.
    done = await world.connect_counselor()
    await done.session.close()
    await world.open_case_room(wait=False)
    first = await world.add_client("Early bird", risk="low", wait=False)
    second = await world.add_client("Night owl", risk="low", wait=False)
    await world.send_case("risk", second, {"risk": "high"})
    await world.clients[first].session.send_text(first, "my first words, before anyone came")

    # Hours later: the counselor starts the app.
    async with counselor_app(world) as (app, pilot):
        await wait_app(
            pilot,
            lambda: queue_ids(app) == [second, first] and app.history_loaded,
            what="both assigned clients in the queue, high risk first",
        )
        night, early = app.queue_entries()
        assert (night.pseudonym, night.risk) == ("Night owl", "high")
        assert (early.pseudonym, early.risk) == ("Early bird", "low")
        assert early.engagement == world.engagements[first]
        await wait_app(
            pilot,
            lambda: any(m.body.startswith("my first words") for m in early.messages),
            what="the client's first words decrypted",
        )
        assert early.awaiting and not any(m.undecryptable for m in early.messages)
        app.open_room(first)
        await pilot.pause()
        assert "my first words, before anyone came" in app.thread_text().plain
        card = str(app.query_one("#card", TextPane).content)
        assert "PHQ-9: 7 (mild)" in card and "Case " in card

        # A client assigned while the app runs is joined and shown too.
        third = await world.add_client("Live one", wait=False)
        await world.clients[third].session.send_text(third, "hello now")
        await wait_app(
            pilot,
            lambda: third in queue_ids(app) and app.link.entry(third).awaiting,
            what="a new client joined while running",
        )


async def test_only_the_bots_invitations_are_joined(world):
    done = await world.connect_counselor()
    await done.session.close()
    await world.open_case_room(wait=False)
    room = await world.add_client("Ana", wait=False)
    other = await world.clients[room].create_encrypted_room([world.counselor_id])

    async with counselor_app(world) as (app, pilot):
        await wait_app(
            pilot,
            lambda: queue_ids(app) == [room] and app.link.case_room == world.case_room,
            what="the bot's rooms joined",
        )
        # The client's own invitation waits for the counselor's own Matrix client.
        assert other in app.session.client.invited_rooms
        assert other not in app.session.client.rooms


async def test_a_page_rings_on_top_of_the_queue_and_t_takes_it(world):
    async with counselor_app(world) as (app, pilot):
        bells = record(app, "bell")
        toasts = record(app, "notify")
        room = await with_client(world, pilot, "Paged")
        assert bells == []

        await world.send_case("page", room, {"page": 7, "reason": "crisis"})
        await wait_app(pilot, lambda: queue_ids(app) == ["page:7", room], what="the page on top")
        assert len(bells) == 1
        assert any("Crisis page 7" in t for t in toasts)
        assert app.link.entry(room).risk == "high"
        ql = app.query_one("#queue", QueueView)
        assert "PAGE" in queue_row(app, queue_ids(app)[0])

        # Highlight the page and take it: `!take 7` in the case channel only.
        ql.focus()
        ql.highlighted = 0
        await pilot.pause()
        assert "Crisis page 7" in str(app.query_one("#thread-body", Static).content)
        await pilot.press("t")
        bot = world.bot
        await until(lambda: "!take 7" in bot.bodies(world.case_room), what="!take at the bot")
        assert not [b for b in bot.bodies(room) if b.startswith("!")]

        # The bot says who took it: the alert goes away.
        await world.send_case("take", room, {"page": 7, "by": world.counselor_id})
        await wait_app(pilot, lambda: queue_ids(app) == [room], what="page answered")
        assert any("You took the page" in t for t in toasts)

        # A new message from the client rings too, as urgent: their risk is high.
        await world.clients[room].session.send_text(room, "I am still here")
        await wait_app(pilot, lambda: len(bells) == 2, what="a bell for the message")
        assert any("Urgent: new message from Paged" in t for t in toasts)


async def test_commands_stay_out_of_the_session_room(world):
    async with counselor_app(world) as (app, pilot):
        room = await with_client(world, pilot, "Private")
        n = world.engagements[room]
        await pilot.press("enter")
        composer = app.query_one("#composer", TextArea)
        assert app.focused is composer
        bot, client = world.bot, world.clients[room]

        # A command typed in the client's thread goes to the case channel, for this case.
        await pilot.press(*"!risk medium", "ctrl+s")
        await until(lambda: f"!risk {n} medium" in bot.bodies(world.case_room), what="!risk")
        assert composer.text == ""
        # Something that is no command is refused and stays in the composer.
        await pilot.press(*"!!! so proud of you", "ctrl+s")
        await pilot.pause()
        assert composer.text == "!!! so proud of you"
        assert "no command" in app.status_note
        composer.load_text("")
        await pilot.press(*"so proud of you", "ctrl+s")
        await until(lambda: "so proud of you" in client.bodies(room), what="the reply")
        assert not [b for b in client.bodies(room) if b.lstrip().startswith("!")]
        assert not [b for b in bot.bodies(room) if b.lstrip().startswith("!")]

        # Private notes, then the bot releases the client: gone, notes deleted.
        await pilot.press("ctrl+n", *"NOTE-to-forget", "ctrl+s")
        notes_dir = world.settings.account_dir(world.counselor_id)
        assert app.notes.get(room) == "NOTE-to-forget"
        await world.send_case("released", room, {})
        await wait_app(pilot, lambda: queue_ids(app) == [], what="client released")
        assert app.notes.get(room) == ""
        reopened = NoteBook.open(
            notes_dir, "correct horse battery staple", limits=world.settings.kdf
        )
        assert reopened.get(room) == ""
        assert app.current is None and app.query_one("#notes", TextArea).text == ""
        # With no client open, the case channel's own commands still go.
        composer.focus()
        await pilot.press(*"!risk low", "ctrl+s")
        assert "Choose a client" in app.status_note and composer.text == "!risk low"
        composer.load_text("")
        await pilot.press(*"!cases", "ctrl+s")
        await until(lambda: "!cases" in bot.bodies(world.case_room), what="!cases at the bot")


async def test_closed_threads_are_read_only(world):
    async with counselor_app(world) as (app, pilot):
        room = await with_client(world, pilot, "Done")
        await world.send_case("closed", room, {"outcome": "face_to_face"})
        await wait_app(pilot, lambda: app.link.entry(room).closed, what="closed")
        await pilot.press("enter")
        await pilot.press(*"one more thing", "ctrl+s")
        await pilot.pause()
        assert "read-only" in app.status_note
        assert app.query_one("#composer", TextArea).text == "one more thing"
        await pilot.press("ctrl+s")
        await pilot.pause(0.5)
        assert "one more thing" not in world.clients[room].bodies(room)


async def test_keystrokes_typed_during_a_slow_send_survive(world):
    async with counselor_app(world) as (app, pilot):
        room = await with_client(world, pilot, "Typist")
        gate = asyncio.Event()
        real_send = app.link.send
        fail_next = False

        async def slow_send(room_id: str, body: str) -> str:
            await gate.wait()
            if fail_next:
                raise MatrixError("send failed: M_UNKNOWN")
            return await real_send(room_id, body)

        app.link.send = slow_send
        await pilot.press("enter")
        composer = app.query_one("#composer", TextArea)
        await pilot.press(*"first message", "ctrl+s")
        await pilot.pause()
        await pilot.press(*"typed while sending")
        await pilot.pause()
        assert "first message" in app.thread_text().plain  # shown as on its way
        gate.set()
        client = world.clients[room]
        await until(lambda: "first message" in client.bodies(room), what="first message")
        await wait_app(pilot, lambda: app.status_note == "Sent.", what="sent")
        assert composer.text == "typed while sending"

        # A send that fails gives its text back, in front of what was typed since.
        gate.clear()
        fail_next = True
        composer.load_text("")
        await pilot.press(*"will fail", "ctrl+s")
        await pilot.pause()
        await pilot.press(*"next")
        gate.set()
        await wait_app(pilot, lambda: "Not sent" in app.status_note, what="failure shown")
        assert composer.text == "will fail\nnext"


async def test_queue_rows_are_redrawn_in_place(world):
    async with counselor_app(world) as (app, pilot):
        first = await with_client(world, pilot, "Ana")
        second = await world.add_client("Budi")
        await world.send_case("risk", first, {"risk": "high"})
        await wait_app(pilot, lambda: queue_ids(app) == [first, second], what="queue ready")
        ql = app.query_one("#queue", QueueView)
        rebuilds = record(ql, "set_rows")
        # A message that leaves the order as it is redraws that row only.
        await world.clients[first].session.send_text(first, "still there?")
        await wait_app(pilot, lambda: app.link.entry(first).unread == 1, what="message in")
        await pilot.pause()
        assert "(1)" in queue_row(app, first)
        repainted = record(ql, "refresh_lines")
        app._tick()  # nothing to redraw within the same minute
        assert rebuilds == [] and repainted == []
        # One that changes the order rebuilds the list, keeping the highlight.
        app.open_room(second)
        await world.send_case("risk", first, {"risk": "low"})
        await world.send_case("risk", second, {"risk": "medium"})
        await wait_app(pilot, lambda: queue_ids(app) == [second, first], what="reordered")
        assert len(rebuilds) >= 1
        assert ql.highlighted_id == second


async def test_a_start_with_many_clients_fills_the_queue_in_batches(world, monkeypatch):
    # Five clients wrote while the app was closed; history is reported every four rooms.
    done = await world.connect_counselor()
    await done.session.close()
    await world.open_case_room(wait=False)
    rooms = [await world.add_client(f"Client {i}", wait=False) for i in range(5)]
    for room in rooms:
        await world.clients[room].session.send_text(room, "is anyone there?")
    # A session of the counselor joined and read them all since: the next start
    # gets nothing new from the sync, the whole queue comes from history.
    done = await world.connect_counselor()
    await done.session.sync_once(0)
    for room_id in list(done.session.client.invited_rooms):
        await done.session.client.join(room_id)
    await done.session.sync_once(0)
    await done.session.sync_once(0)
    await done.session.close()
    monkeypatch.setattr(tui.link, "HISTORY_BATCH", 4)
    reports: list[int] = []  # clients listed, at each report while history loads
    real = CounselorApp._model_changed

    def reported(self, changed):
        if self.queue_ready and not self.history_loaded:
            reports.append(len(self.link.active_entries()))
        return real(self, changed)

    monkeypatch.setattr(CounselorApp, "_model_changed", reported)
    async with counselor_app(world) as (app, pilot):
        await wait_app(
            pilot,
            lambda: app.history_loaded and sorted(queue_ids(app)) == sorted(rooms),
            what="every client in the queue",
        )
        assert all(e.brief and e.awaiting for e in app.queue_entries())
        for room in rooms:  # every row shows the wait (the last batch was reported too)
            assert " m" in queue_row(app, room).split("Client", 1)[1]
    # The case channel and five session rooms, reported as they came, not once at the end.
    assert len(reports) >= 2 and reports[-1] == 5, reports
