"""The counselor's app and the real bridge together: a client seated while the app was
closed is in the queue when it starts, with their first words; a page rings on top and the
take key answers it; a command typed in the client's thread goes to the bridge only. A
client erased while the app was closed is shown from the queue's snapshot until the app has
caught up, then leaves the queue and the snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from textual.widgets import Static, TextArea

from e2ecounsel.matrix.session import MatrixSession
from tests.integration.bridgekit import POLICY, BotEnv, membership, seat_client, text
from tests.integration.matrixkit import Recorder, until
from tests.journeys.conftest import hire, poll
from tests.tui.test_care import record
from tests.tui.world import PASSPHRASE, queue_ids, queue_row, wait_app
from tui.app import CounselorApp, make_app
from tui.connect import Connected
from tui.notes import FAST_FOR_TESTS, NoteBook, unlock
from tui.panes import QueueView
from tui.settings import TuiSettings
from tui.snapshot import SNAPSHOT_FILE, QueueSnapshot

COUNTRY = POLICY.crisis.countries[0].code
FIRST_WORDS = "hello, is anyone there?"


@asynccontextmanager
async def app_of(
    bot: BotEnv, who: Recorder, tmp_path: Path, *, gate: asyncio.Event | None = None
) -> AsyncIterator[tuple[CounselorApp, Any]]:
    """The counselor's app on her own (already cross-signed) device, under Pilot: the
    queue's snapshot shown at once, signed in behind it (once ``gate`` is set)."""
    settings = TuiSettings(
        data_dir=tmp_path / "tui-data",
        config_dir=tmp_path / "tui-config",
        bot_user_id=bot.user_id,
        kdf=FAST_FOR_TESTS,
    )
    old = who.session
    session = MatrixSession(old.homeserver, old.user_id, old.store_dir, old.sealer)
    store = settings.account_dir(old.user_id)
    sealer = unlock(store, PASSPHRASE, limits=FAST_FOR_TESTS)
    notes = NoteBook(store / "notes.sealed", sealer)
    snapshot = QueueSnapshot(store / SNAPSHOT_FILE, sealer, old.user_id)
    snapshot.read()

    async def online() -> Connected:
        if gate is not None:
            await gate.wait()
        await session.login(None)
        await session.ensure_cross_signing(None)
        await session.sync_once(0)
        return Connected(session, notes, snapshot=snapshot)

    app = make_app(settings, session, notes, snapshot=snapshot, online=online)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            yield app, pilot
    finally:
        await session.close()


def snapshot_of(settings: TuiSettings, user_id: str) -> QueueSnapshot:
    """The account's queue snapshot, read (unlocked with the passphrase)."""
    store = settings.account_dir(user_id)
    snapshot = QueueSnapshot(
        store / SNAPSHOT_FILE, unlock(store, PASSPHRASE, limits=FAST_FOR_TESTS), user_id
    )
    snapshot.read()
    return snapshot


async def seated_while_closed(bot: BotEnv, people: Any) -> tuple[Recorder, Recorder, Any]:
    """Ana hired (her device exists, no app of hers runs), a client seated with her
    who says their first words: (Ana, the client, the seating)."""
    ana = await people("ana")
    await ana.close()
    await hire(bot, ana, "Ana")
    client = await people("client")
    seated = await seat_client(bot, client, "Ana", pseudonym="Wren")
    await seated.client.session.send_text(seated.room.room_id, FIRST_WORDS)
    return ana, client, seated


async def test_a_client_seated_while_the_app_was_closed_is_cared_for_from_the_app(
    bot, people, tmp_path
):
    ana, client, seated = await seated_while_closed(bot, people)
    room = seated.room.room_id

    async with app_of(bot, ana, tmp_path) as (app, pilot):
        bells = record(app, "bell")
        toasts = record(app, "notify")
        await wait_app(pilot, lambda: queue_ids(app) == [room], what="the client in the queue")
        (entry,) = app.queue_entries()
        assert (entry.pseudonym, entry.risk) == ("Wren", "low")
        await wait_app(
            pilot,
            lambda: any(m.body == FIRST_WORDS for m in entry.messages),
            what="the client's first words decrypted",
        )
        app.open_room(room)
        await pilot.pause()
        assert FIRST_WORDS in app.thread_text().plain
        assert not any(m.undecryptable for m in entry.messages)

        # The client pages: an alert on top of the queue, and a bell.
        rung = len(bells)
        await seated.dm.send("urgent")
        reply = await seated.dm.expect(lambda b: POLICY.crisis_reply("en", COUNTRY)[:60] in b)
        assert reply.endswith(text("en", "crisis.paged"))
        await wait_app(
            pilot,
            lambda: len(queue_ids(app)) == 2 and queue_ids(app)[0].startswith("page:"),
            what="the page on top",
        )
        page, client_row = queue_ids(app)
        assert client_row == room and page.removeprefix("page:").isdigit()
        number = page.removeprefix("page:")
        assert len(bells) == rung + 1, "the page rings once"
        assert any(f"Crisis page {number}" in t for t in toasts), toasts
        assert app.link.entry(room).risk == "high"

        # Ana highlights the alert and takes it with the take key: the bridge answers.
        ql = app.query_one("#queue", QueueView)
        ql.focus()
        ql.highlighted = 0
        await pilot.pause()
        assert queue_row(app, ql.row_ids[0]).lstrip().startswith("PAGE")
        assert f"Crisis page {number}" in str(app.query_one("#thread-body", Static).content)
        await pilot.press("t")
        await wait_app(pilot, lambda: queue_ids(app) == [room], what="the page taken")
        assert any("You took the page" in t for t in toasts), toasts
        # Ana is the client's own counselor, already in their room: the client is told
        # she has seen the message and is with them now.
        await seated.room.expect(text("en", "take.counselor_here", name="Ana"))

        # A command typed in the client's thread: to the bridge only; the risk comes back.
        app.open_room(room)
        await pilot.pause()
        composer = app.query_one("#composer", TextArea)
        composer.focus()
        await pilot.press(*"!risk medium", "ctrl+s")
        await wait_app(
            pilot, lambda: app.link.entry(room).risk == "medium", what="the risk fact", timeout=30
        )
        assert composer.text == ""
        row = queue_row(app, ql.row_ids[0])
        assert row.startswith(" MEDI ") and "Wren" in row, row
        await pilot.press(*"I am here, Wren", "ctrl+s")
        await until(lambda: "I am here, Wren" in client.bodies(room), what="Ana's reply")
        assert not [b for b in client.bodies(room) if b.lstrip().startswith("!")]


async def test_a_client_erased_while_the_app_was_closed_leaves_the_queue_and_its_snapshot(
    bot, people, tmp_path
):
    ana, client, seated = await seated_while_closed(bot, people)
    room = seated.room.room_id
    async with app_of(bot, ana, tmp_path) as (app, pilot):
        await wait_app(
            pilot,
            lambda: app.history_loaded and queue_ids(app) == [room],
            what="the client in the queue",
        )
    settings = app.settings
    remembered = snapshot_of(settings, ana.session.user_id).loaded
    assert remembered is not None and [e.room_id for e in remembered.entries] == [room]

    # While Ana's app is closed, the client asks to be erased.
    await seated.dm.send("erase")
    await seated.dm.expect(text("en", "erase.confirm"))
    await seated.dm.send("yes")
    await seated.dm.expect(text("en", "erase.done"))

    async def removed() -> bool:
        return await membership(client, room, ana.session.user_id) == "leave"

    await poll(removed, what="Ana removed from the client's room")

    gate = asyncio.Event()
    async with app_of(bot, ana, tmp_path, gate=gate) as (app, pilot):
        await pilot.pause()
        assert queue_ids(app) == [room], "the snapshot, before the homeserver answered"
        gate.set()
        await wait_app(
            pilot,
            lambda: app.history_loaded and queue_ids(app) == [],
            what="the erased client gone after catching up",
        )
        # Rewritten at once, not only at quit.
        remembered = snapshot_of(settings, ana.session.user_id).loaded
        assert remembered is not None and remembered.entries == []
