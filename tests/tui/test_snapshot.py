"""The queue's sealed snapshot: a start shows the queue as it was before the homeserver
has answered, catches up in place, keeps what is typed meanwhile, and never puts a
client's words on disk in the clear. A damaged snapshot, or one of another account,
is not used; a wrong passphrase opens nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from dataclasses import replace

import pytest
from textual.widgets import TextArea

from e2ecounsel.homeserver import free_port
from tests.integration.matrixkit import until
from tests.tui.world import PASSPHRASE, make_world, queue_ids, wait_app
from tui.app import CATCHING_UP, NOT_YET_SENT, app_of_store, make_app
from tui.connect import Offline, SignInFailed, go_online, unlock_store
from tui.panes import TextPane
from tui.screens import SignInScreen
from tui.snapshot import SNAPSHOT_FILE, QueueSnapshot

FIRST_WORDS = "SECRETWORDS my first message"


@pytest.fixture
async def world(homeserver, tmp_path):
    w = await make_world(homeserver, tmp_path)
    yield w
    await w.close()


async def first_start(world, expected: list[str]) -> None:
    """A start without a snapshot: the queue comes from the homeserver; quitting
    writes the snapshot."""
    done = await world.connect_counselor()
    assert done.snapshot is not None and done.snapshot.loaded is None
    app = make_app(world.settings, done.session, done.notes, snapshot=done.snapshot)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_app(
                pilot,
                lambda: (
                    app.history_loaded
                    and queue_ids(app) == expected
                    and all(e.brief and e.awaiting for e in app.queue_entries())
                ),
                what="the queue from the homeserver",
            )
    finally:
        await done.session.close()


def snapshot_path(world):
    return world.settings.account_dir(world.counselor_id) / SNAPSHOT_FILE


async def test_a_start_shows_the_saved_queue_at_once_and_catches_up_in_place(world):
    await (await world.connect_counselor()).session.close()  # the device exists
    await world.open_case_room(wait=False)
    risky = await world.add_client("Ranti", risk="high", wait=False)
    early = await world.add_client("Esti", wait=False)
    gone = await world.add_client("Gita", wait=False)
    for room in (early, risky, gone):
        await world.clients[room].session.send_text(room, FIRST_WORDS)
    await first_start(world, [risky, early, gone])

    # Sealed at rest: none of the pseudonyms, brief fields, words or room ids in the clear.
    raw = snapshot_path(world).read_bytes()
    for plain in ("Ranti", "Esti", "Stress", "Indonesia", "PHQ-9", "SECRETWORDS", risky, early):
        assert plain.encode() not in raw, plain
    assert stat.S_IMODE(os.stat(snapshot_path(world)).st_mode) == 0o600

    # While the app is closed, Esti writes again, and the counselor is taken out of
    # Gita's room (no word in the case channel).
    await world.clients[early].session.send_text(early, "are you there?")
    await world.bot.session.client.room_kick(gone, world.counselor_id)

    # The next start: the homeserver is held back until the test lets it answer.
    gate = asyncio.Event()
    opened = await world.unlock_counselor()

    async def online():
        await gate.wait()
        return await go_online(world.settings, opened)

    app = make_app(
        world.settings, opened.session, opened.notes, snapshot=opened.snapshot, online=online
    )
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            assert not opened.session.client.rooms, "nothing synced yet"
            assert queue_ids(app) == [risky, early, gone]
            assert [e.pseudonym for e in app.queue_entries()] == ["Ranti", "Esti", "Gita"]
            assert all(e.awaiting and e.brief for e in app.queue_entries())
            assert CATCHING_UP in str(app.status_text())
            # The counselor moves and reads while it catches up.
            await pilot.press("down")
            await pilot.pause()
            assert app.current == early
            assert "Esti" in app.query_one("#card", TextPane).content.plain
            assert FIRST_WORDS in app.thread_text().plain
            # Sending now sends nothing, and keeps the text.
            composer = app.query_one("#composer", TextArea)
            composer.focus()
            await pilot.press(*"I am here", "ctrl+s")
            assert composer.text == "I am here"
            assert app.status_note == NOT_YET_SENT

            gate.set()
            await wait_app(
                pilot,
                lambda: (
                    app.history_loaded
                    and "are you there?" in app.thread_text().plain
                    and CATCHING_UP not in str(app.status_text())
                ),
                what="caught up: the message written meanwhile in place",
            )
            assert queue_ids(app) == [risky, early], "a room we are no longer in is gone"
            assert app.thread_text().plain.count(FIRST_WORDS) == 1, "no duplicate"
            again = await world.unlock_counselor()
            await again.session.close()
            assert again.snapshot.loaded is not None, "rewritten at once, not only at quit"
            assert {e.room_id for e in again.snapshot.loaded.entries} == {risky, early}
            await pilot.press("ctrl+s")
            client = world.clients[early]
            await until(lambda: "I am here" in client.bodies(early), what="sent once online")
            assert composer.text == ""
    finally:
        await opened.session.close()


async def test_a_damaged_or_foreign_snapshot_is_not_used_and_a_wrong_passphrase_opens_nothing(
    world, caplog
):
    await (await world.connect_counselor()).session.close()  # the device exists
    await world.open_case_room(wait=False)
    room = await world.add_client("Dara", wait=False)
    await world.clients[room].session.send_text(room, FIRST_WORDS)
    await first_start(world, [room])
    path = snapshot_path(world)
    sealed = path.read_bytes()

    with pytest.raises(SignInFailed, match="does not open"):
        await world.unlock_counselor("not the passphrase")
    assert path.read_bytes() == sealed

    # The same key, another account's snapshot: not shown.
    opened = await world.unlock_counselor()
    assert opened.snapshot.loaded is not None
    foreign = QueueSnapshot(path, opened.snapshot._sealer, "@someone-else:localhost")
    assert foreign.read() is None
    await opened.session.close()

    for damage in (sealed[: len(sealed) // 2], b"not sealed at all", b""):
        path.write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tui.snapshot"):
            opened = await world.unlock_counselor()
        assert opened.snapshot.loaded is None
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.startswith("queue snapshot not used: ")
        assert "Dara" not in line and room not in line
        await opened.session.close()

    # It starts as without one: the queue from the homeserver, and a new snapshot at quit.
    opened = await world.unlock_counselor()
    app = app_of_store(world.settings, opened)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            assert queue_ids(app) == []
            await wait_app(
                pilot,
                lambda: app.history_loaded and queue_ids(app) == [room],
                what="the queue from the homeserver",
            )
    finally:
        await opened.session.close()
    again = await world.unlock_counselor()
    assert again.snapshot.loaded is not None
    assert [e.room_id for e in again.snapshot.loaded.entries] == [room]
    await again.session.close()


async def test_a_refused_sign_in_behind_the_snapshot_brings_the_sign_in_back(world):
    from textual.widgets import Static

    from tui.screens import SignInScreen

    await (await world.connect_counselor()).session.close()
    await world.open_case_room(wait=False)
    room = await world.add_client("Nina", wait=False)
    await world.clients[room].session.send_text(room, FIRST_WORDS)
    await first_start(world, [room])
    # The saved device's access token is revoked (signed out from elsewhere).
    done = await world.connect_counselor()
    await done.session.client.logout()
    await done.session.close()

    opened = await world.unlock_counselor()
    app = app_of_store(world.settings, opened)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            assert queue_ids(app) == [room]
            await wait_app(
                pilot, lambda: isinstance(app.screen, SignInScreen), what="sign-in shown again"
            )
            error = app.screen.query_one("#signin-error", Static)
            await wait_app(
                pilot, lambda: "password" in str(error.content), what="why, in plain words"
            )
            assert not app.online and queue_ids(app) == [room]
    finally:
        await opened.session.close()


class LateForwarder:
    """A TCP port that refuses connections until :meth:`open`, then forwards to the
    homeserver: a network that comes back while the app is running."""

    def __init__(self, target: str) -> None:
        host_port = target.split("://", 1)[1]
        self.target_host, port = host_port.rsplit(":", 1)
        self.target_port = int(port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(ConnectionError):  # either side hung up
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
            finally:
                writer.close()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self._server = await asyncio.start_server(serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_an_unreachable_homeserver_keeps_the_saved_queue_on_screen_and_is_tried_again(
    world,
):
    await (await world.connect_counselor()).session.close()  # the device exists
    await world.open_case_room(wait=False)
    room = await world.add_client("Wulan", wait=False)
    await world.clients[room].session.send_text(room, FIRST_WORDS)
    await first_start(world, [room])

    # The network is down when the app starts: the port refuses every connection.
    net = LateForwarder(world.base_url)
    settings = replace(world.settings, max_backoff_s=0.2)
    opened = await unlock_store(
        settings, homeserver=net.url, user_id=world.counselor_id, passphrase=PASSPHRASE
    )
    app = app_of_store(settings, opened)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_app(pilot, lambda: app.offline_retries >= 3, what="three tries offline")
            assert not isinstance(app.screen, SignInScreen), "the queue stays on screen"
            assert queue_ids(app) == [room]
            assert FIRST_WORDS in app.thread_text().plain
            assert "offline: the homeserver cannot be reached" in str(app.status_text())
            assert "password" not in str(app.status_text())

            await net.open()
            await wait_app(
                pilot,
                lambda: app.history_loaded and app.online,
                what="signed in once the homeserver answers",
            )
            assert "offline" not in str(app.status_text())
            assert not isinstance(app.screen, SignInScreen)
            composer = app.query_one("#composer", TextArea)
            composer.focus()
            await pilot.press(*"back online", "ctrl+s")
            client = world.clients[room]
            await until(lambda: "back online" in client.bodies(room), what="sent once online")
    finally:
        await opened.session.close()
        await net.close()


async def test_an_unreachable_homeserver_at_first_sign_in_is_named_as_such(world):
    net = LateForwarder(world.base_url)
    settings = replace(world.settings, max_backoff_s=0.05)
    opened = await unlock_store(
        settings, homeserver=net.url, user_id=world.counselor_id, passphrase=PASSPHRASE
    )
    with pytest.raises(Offline, match="cannot be reached"):
        await go_online(settings, opened, password=world.counselor_password)
    await opened.session.close()
