"""The counselor app against a real Synapse, with real E2EE clients (Pilot)."""

from __future__ import annotations

import html
import secrets

import pytest
from nio import RoomMessageText
from textual.widgets import Static, TextArea

from e2ecounsel.matrix import MatrixSession
from e2ecounsel.sealing import Sealer
from tests.integration.matrixkit import until
from tests.tui.world import make_world, queue_ids, queue_row, wait_app
from tui.app import make_app
from tui.panes import QueueView, TextPane


@pytest.fixture
async def world(homeserver, tmp_path):
    w = await make_world(homeserver, tmp_path)
    yield w
    await w.close()


async def seeded_app(world):
    """Connect the counselor through the TUI's sign-in path; the app and the connection."""
    done = await world.connect_counselor()
    app = make_app(world.settings, done.session, done.notes)
    return app, done


async def test_queue_order_reply_and_layout(world):
    app, done = await seeded_app(world)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await world.open_case_room()
            early = await world.add_client("Early")
            late = await world.add_client("Late")
            risky = await world.add_client("Risky", risk="high")
            quiet = await world.add_client("Quiet")
            for room in (early, late, risky):  # in this order: Early waits longest
                await world.clients[room].session.send_text(room, f"hello from {room[:6]}")
            await wait_app(
                pilot,
                lambda: (
                    queue_ids(app) == [risky, early, late, quiet]
                    and sum(e.unread for e in app.queue_entries()) == 3
                ),
                what="queue order high risk, then longest wait, then the rest",
            )
            entries = app.queue_entries()
            assert [e.pseudonym for e in entries] == ["Risky", "Early", "Late", "Quiet"]
            assert [e.unread for e in entries] == [1, 1, 1, 0]

            # Layout: queue left, thread centre, card right; status on top, footer below.
            q = app.query_one("#queue-pane").region
            t = app.query_one("#thread-pane").region
            c = app.query_one("#card-pane").region
            assert q.x == 0 and q.right <= t.x and t.right <= c.x and c.right == 120
            assert app.query_one("#status").region.y == 0
            assert app.query_one("#composer").region.bottom <= 35

            # Reply to the high-risk client from the composer.
            ql = app.query_one("#queue", QueueView)
            ql.focus()
            ql.highlighted = 0
            await pilot.press("enter")
            assert app.focused is app.query_one("#composer", TextArea)
            await pilot.press(*"I read you, I'm here.")
            await pilot.press("ctrl+s")
            client = world.clients[risky]
            await until(
                lambda: "I read you, I'm here." in client.bodies(risky),
                what="reply decrypted at the client",
            )
            assert client.undecryptable == []
            await wait_app(pilot, lambda: not app.link.entry(risky).awaiting, what="not awaiting")
            assert app.query_one("#composer", TextArea).text == ""
            # Still high risk so still first, but no longer awaiting; others keep their order.
            assert queue_ids(app)[:3] == [risky, early, late]
            card = str(app.query_one("#card", TextPane).content)
            assert "Risky" in card and "PHQ-9: 7 (mild)" in card
            assert "Consent given: 2026-11-20" in card
    finally:
        await done.session.close()


async def test_reply_round_walks_awaiting_clients_in_order(world):
    app, done = await seeded_app(world)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await world.open_case_room()
            a = await world.add_client("Ana")
            b = await world.add_client("Budi")
            c = await world.add_client("Citra", risk="high")
            for room in (a, b, c):
                await world.clients[room].session.send_text(room, "are you there?")
            await wait_app(
                pilot,
                lambda: (
                    queue_ids(app) == [c, a, b] and all(e.awaiting for e in app.queue_entries())
                ),
                what="queue ready, everyone awaiting",
            )

            await pilot.press("f2")
            status = app.query_one("#status", Static)
            assert app.current == c
            assert "of 3 today · 3 left" in str(status.content)
            visited = [app.current]
            # Read, reply, next: sending moves the round on by itself.
            await pilot.press(*"first reply", "ctrl+s")
            await wait_app(pilot, lambda: app.current == a, what="round moves to Ana")
            assert "· 2 left" in str(status.content)
            visited.append(app.current)
            await pilot.press("f3")  # skip Ana for now
            visited.append(app.current)
            assert "· 1 left" in str(status.content)
            assert visited == [c, a, b]
            await pilot.press("f3")
            assert "· done" in str(status.content)
            await until(lambda: "first reply" in world.clients[c].bodies(c), what="reply at Citra")
    finally:
        await done.session.close()


async def test_actions_snippets_and_help(world):
    world.settings.config_dir.mkdir(parents=True, exist_ok=True)
    (world.settings.config_dir / "snippets.toml").write_text(
        '[[snippet]]\nname = "welcome"\nlang = "en"\ntext = "Thank you for writing to me."\n'
        '[[snippet]]\nname = "boundaries"\ntext = "This chat is not an emergency service."\n',
        encoding="utf-8",
    )
    app, done = await seeded_app(world)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await world.open_case_room()
            room = await world.add_client("Dian")
            await wait_app(pilot, lambda: queue_ids(app) == [room], what="queue ready")
            await pilot.press("enter")

            # Snippet: search, insert into the composer, still editable before sending.
            await pilot.press("f4")
            await pilot.press(*"emergency", "enter")
            composer = app.query_one("#composer", TextArea)
            assert composer.text == "This chat is not an emergency service."

            # Help lists every key.
            await pilot.press("f1")
            help_text = str(app.screen.query_one("#help-text", Static).content)
            for key in ("ctrl+s", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "enter"):
                assert key in help_text
            await pilot.press("escape")

            # Risk: no confirmation; the bot gets the command in the case channel,
            # naming the case; the badge follows the bot's answer, not the keypress.
            n = world.engagements[room]
            await pilot.press("f6")
            await pilot.press("enter")  # "High" is first
            bot = world.bot
            case = world.case_room
            await until(lambda: f"!risk {n} high" in bot.bodies(case), what="!risk at the bot")
            await world.send_case("risk", room, {"risk": "high"})
            await wait_app(pilot, lambda: app.link.entry(room).risk == "high", what="risk badge")

            # Offer live-session slots: the bot gets `!book N`.
            await pilot.press("f10")
            await until(lambda: f"!book {n}" in bot.bodies(case), what="!book at the bot")

            # Close: outcome, then a confirmation; "no" sends nothing.
            await pilot.press("f5", "enter")
            assert "Close the counseling with" in str(app.screen.query_one("#question").content)
            await pilot.press("n")
            await pilot.press("f5", "enter", "y")
            await until(lambda: f"!close {n} resolved" in bot.bodies(case), what="!close")
            assert bot.bodies(case).count(f"!close {n} resolved") == 1
            assert not [b for b in bot.bodies(room) if b.startswith("!")]
            await world.send_case("closed", room, {"outcome": "resolved"})
            await wait_app(pilot, lambda: app.link.entry(room).closed, what="closed")
            assert queue_ids(app) == [room]  # still readable, at the end of the queue
            assert "read-only" in str(app.query_one("#thread-title", Static).content)
    finally:
        await done.session.close()


MARKUP = "[red]alarm[/red] [@click=app.quit]press[/] [link=https://evil.example]x[/link]"
ESCAPES = "\x1b[31mRED\x1b[0m \x1b]0;pwned\x07title \x1b[2J"


async def test_untrusted_text_renders_literally(world):
    app, done = await seeded_app(world)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await world.open_case_room()
            room = await world.add_client("[b]Bold[/b]")
            await world.clients[room].session.send_text(room, f"{MARKUP}\n{ESCAPES}")
            await wait_app(
                pilot, lambda: len(app.link.entry(room).messages) == 1, what="message arrives"
            )
            await wait_app(pilot, lambda: app.current == room, what="thread open")
            await pilot.pause()
            thread = app.query_one("#conversation", TextPane).content
            plain = thread.plain
            assert MARKUP in plain  # as typed, brackets and all
            assert "RED title" in plain and "\x1b" not in plain and "\x07" not in plain
            assert "pwned" not in plain  # the OSC title sequence is gone, not printed
            assert not any("red" == str(s.style) or "link" in str(s.style) for s in thread.spans)
            # The pseudonym from the brief is literal too, in the queue and the card.
            assert "[b]Bold[/b]" in str(app.query_one("#card", TextPane).content)
            assert "[b]Bold[/b]" in queue_row(app, queue_ids(app)[0])
            # The rendered screen shows the brackets (nothing was taken as markup).
            svg = html.unescape(app.export_screenshot()).replace("\xa0", " ")
            assert "[red]alarm[/red]" in svg and "[@click=app.quit]press[/]" in svg
            assert app.is_running  # [@click=app.quit] did nothing
    finally:
        await done.session.close()


def files_containing(folder, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_sign_in_notes_sealed_and_restart_opens_the_queue(world):
    from textual.widgets import Input

    from tests.tui.world import PASSPHRASE
    from tui.notes import NoteBook, WrongPassphrase
    from tui.screens import SignInScreen

    canary = "NOTECANARY-7f3a9"
    app = make_app(world.settings)
    async with app.run_test(size=(120, 36)) as pilot:
        assert isinstance(app.screen, SignInScreen)
        for wid, value in (
            ("homeserver", world.base_url),
            ("user", world.counselor_id),
            ("password", world.counselor_password),
            ("passphrase", PASSPHRASE),
        ):
            app.screen.query_one(f"#{wid}", Input).value = value
        app.screen.query_one("#passphrase", Input).focus()
        await pilot.press("enter")
        await wait_app(
            pilot,
            lambda: app.queue_ready,
            what="signed in, queue shown",
        )
        from tui.screens import NoticeScreen

        assert isinstance(app.screen, NoticeScreen)  # the new recovery key, shown once
        assert "Write this down" in str(app.screen.query_one("#notice-body", Static).content)
        await pilot.press("enter")
        device_id = app.session.device_id
        await world.open_case_room()
        room = await world.add_client("Eka")
        await world.clients[room].session.send_text(room, "before the restart")
        await wait_app(pilot, lambda: queue_ids(app) == [room], what="client in queue")
        await wait_app(pilot, lambda: app.current == room, what="thread open")
        await pilot.press("ctrl+n", *canary, "ctrl+s")
        assert "Notes saved" in app.status_note
    account_dir = world.settings.account_dir(world.counselor_id)
    assert (account_dir / "notes.sealed").exists()
    assert files_containing(world.settings.data_dir, canary.encode()) == []
    assert NoteBook.open(account_dir, PASSPHRASE, limits=world.settings.kdf).get(room) == canary
    with pytest.raises(WrongPassphrase, match="does not open"):
        NoteBook.open(account_dir, "not the passphrase", limits=world.settings.kdf)

    app2 = make_app(world.settings)
    async with app2.run_test(size=(120, 36)) as pilot:
        screen = app2.screen
        assert isinstance(screen, SignInScreen) and screen.unlock_only
        assert not screen.query("#password")  # no password asked again
        screen.query_one("#passphrase", Input).value = "not the passphrase"
        screen.query_one("#passphrase", Input).focus()
        await pilot.press("enter")
        error = screen.query_one("#signin-error", Static)
        await wait_app(pilot, lambda: "does not open" in str(error.content), what="clear error")
        screen.query_one("#passphrase", Input).value = PASSPHRASE
        await pilot.press("enter")
        await wait_app(pilot, lambda: queue_ids(app2) == [room], what="straight to the queue")
        assert app2.session.device_id == device_id
        await wait_app(
            pilot,
            lambda: "before the restart" in app2.thread_text().plain,
            what="history readable after restart",
        )
        assert app2.query_one("#notes", TextArea).text == canary


async def test_homeserver_restart_shows_reconnecting_then_recovers(fresh_homeserver, tmp_path):
    w = await make_world(fresh_homeserver, tmp_path)
    done = await w.connect_counselor()
    app = make_app(w.settings, done.session, done.notes)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            status = app.query_one("#status", Static)
            await wait_app(pilot, lambda: "online" in str(status.content), what="online")
            await fresh_homeserver.stop()
            await wait_app(
                pilot, lambda: "reconnecting" in str(status.content), what="reconnecting shown"
            )
            assert app.is_running
            await fresh_homeserver.start()
            await wait_app(
                pilot, lambda: "online" in str(status.content), timeout=90, what="back online"
            )
            # And it works again: a new client reaches the queue.
            await w.open_case_room()
            room = await w.add_client("After")
            await wait_app(pilot, lambda: queue_ids(app) == [room], what="queue after restart")
    finally:
        await done.session.close()
        await w.close()


async def test_key_export_opens_history_on_a_new_device(world, tmp_path):
    """F8 exports room keys in Element's format; imported on a new device, old messages open."""
    app, done = await seeded_app(world)
    key_file = tmp_path / "keys.txt"
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await world.open_case_room()
            room = await world.add_client("Keys")
            await world.clients[room].session.send_text(room, "an old message")
            await wait_app(
                pilot, lambda: len(app.link.entry(room).messages) == 1, what="message arrives"
            )
            await pilot.press("f8")
            await pilot.press(*str(key_file), "enter", *"file passphrase", "enter")
            await until(lambda: key_file.exists() and key_file.stat().st_size > 0, what="export")
            assert key_file.read_text().startswith("-----BEGIN MEGOLM SESSION DATA-----")
    finally:
        await done.session.close()

    # A new machine: a fresh device of the same counselor, without the keys.
    fresh = MatrixSession(
        world.base_url,
        world.counselor_id,
        tmp_path / "new-machine",
        Sealer(secrets.token_bytes(32)),
    )
    await fresh.login(world.counselor_password)
    try:
        await fresh.sync_once(0)
        await fresh.wait_for_room(room)

        async def readable() -> list[str]:
            resp = await fresh.client.room_messages(room, start="", limit=50)
            return [e.body for e in resp.chunk if isinstance(e, RoomMessageText)]

        assert "an old message" not in await readable()
        with pytest.raises(Exception):  # noqa: B017 - nio raises its own error type here
            await fresh.client.import_keys(str(key_file), "wrong passphrase")
        await fresh.client.import_keys(str(key_file), "file passphrase")
        assert "an old message" in await readable()
    finally:
        await fresh.close()
