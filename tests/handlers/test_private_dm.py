"""The DM's privacy is known before the client's first message: its state is read
when the bot greets, not on the path of the first answer (a crisis reply, maybe)."""

from __future__ import annotations

from pathlib import Path

from e2ecounsel.policy import Policy
from tests.handlers.kit import open_hub


async def test_the_first_message_is_answered_without_reading_the_rooms_state(
    tmp_path: Path, policy: Policy
) -> None:
    hub = await open_hub(tmp_path / "bridge.db", policy)
    try:
        client = "@client:test"
        dm = await hub.open_dm(client)
        assert hub.matrix.calls("/state"), "the greeting's step did not read the DM's state"
        hub.matrix.requests.clear()
        greeted = len(hub.said(dm))
        await hub.event(dm, client, "1")
        assert len(hub.said(dm)) > greeted
        assert not hub.matrix.calls("/state")

        # A third person joins: the bridge sees the membership change and reads again.
        hub.matrix.members[dm]["@friend:test"] = "join"
        hub.ctx.room_changed(dm)
        await hub.event(dm, client, "agree")
        assert hub.matrix.calls("/state")
        line = policy.crisis_line("en", None)
        assert hub.last(dm) == hub.ctx.render.text("en", "dm.not_private", crisis_line=line)
    finally:
        await hub.store.close()
