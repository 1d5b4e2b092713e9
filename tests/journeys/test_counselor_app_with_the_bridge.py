"""The counselor's app and the real bridge together: a client seated while the app was
closed is in the queue when it starts, with their first words; a page rings on top and the
take key answers it; a command typed in the client's thread goes to the bridge only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from textual.widgets import OptionList, Static, TextArea

from e2ecounsel.matrix.session import MatrixSession
from tests.integration.bridgekit import POLICY, BotEnv, seat_client, text
from tests.integration.matrixkit import Recorder, until
from tests.journeys.conftest import hire
from tests.tui.test_care import record
from tests.tui.world import PASSPHRASE, queue_ids, wait_app
from tui.app import CounselorApp, make_app
from tui.notes import FAST_FOR_TESTS, NoteBook
from tui.settings import TuiSettings

COUNTRY = POLICY.crisis.countries[0].code
FIRST_WORDS = "hello, is anyone there?"


@asynccontextmanager
async def app_of(
    bot: BotEnv, who: Recorder, tmp_path: Path
) -> AsyncIterator[tuple[CounselorApp, Any]]:
    """The counselor's app on her own (already cross-signed) device, under Pilot."""
    settings = TuiSettings(
        data_dir=tmp_path / "tui-data",
        config_dir=tmp_path / "tui-config",
        bot_user_id=bot.user_id,
        kdf=FAST_FOR_TESTS,
    )
    old = who.session
    session = MatrixSession(old.homeserver, old.user_id, old.store_dir, old.sealer)
    await session.login(None)
    await session.ensure_cross_signing(None)
    await session.sync_once(0)
    notes = NoteBook.open(settings.account_dir(old.user_id), PASSPHRASE, limits=FAST_FOR_TESTS)
    app = make_app(settings, session, notes)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            yield app, pilot
    finally:
        await session.close()


async def test_a_client_seated_while_the_app_was_closed_is_cared_for_from_the_app(
    bot, people, tmp_path
):
    ana = await people("ana")
    # Ana's device exists, but no app of hers runs while the client is seated.
    await ana.close()
    await hire(bot, ana, "Ana")
    client = await people("client")
    seated = await seat_client(bot, client, "Ana", pseudonym="Wren")
    room = seated.room.room_id
    await seated.client.session.send_text(room, FIRST_WORDS)

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
        ql = app.query_one("#queue", OptionList)
        ql.focus()
        ql.highlighted = 0
        await pilot.pause()
        assert str(ql.get_option_at_index(0).prompt).lstrip().startswith("PAGE")
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
        row = str(ql.get_option_at_index(0).prompt)
        assert row.startswith(" MEDI ") and "Wren" in row, row
        await pilot.press(*"I am here, Wren", "ctrl+s")
        await until(lambda: "I am here, Wren" in client.bodies(room), what="Ana's reply")
        assert not [b for b in client.bodies(room) if b.lstrip().startswith("!")]
