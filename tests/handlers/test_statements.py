"""What one ordinary intake answer costs the store: each statement is a trip to the
database's thread, so the count is watched."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.persistence.inbox import InboxItem
from tests.handlers.kit import Hub


async def test_an_ordinary_intake_answer_takes_seven_trips_to_the_database(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hub.counselor("@c1:test", "Dewi Lestari")
    client = "@client:test"
    dm = await hub.open_dm(client)
    for answer in ("1", "agree"):
        await hub.event(dm, client, answer)
    conn = hub.store.db._driver._conn  # type: ignore[attr-defined]
    trips: list[str] = []
    execute = conn._execute

    async def counting(fn: Any, *args: Any) -> Any:
        trips.append(getattr(fn, "__name__", "?"))
        return await execute(fn, *args)

    monkeypatch.setattr(conn, "_execute", counting)
    before = hub.said(dm)[-1]
    hub.ctx.work._flush = None  # type: ignore[attr-defined]  # the step alone, not the kit's sender
    await hub.router.handle(hub_item(hub, dm, client, "yes"))
    # Handled yet? The room's kind, the client; then one transaction: the client's
    # upsert (with BEGIN), the reply queued, the event marked handled, COMMIT. The
    # roster and caseloads are not read for an answer far from the counselor choice.
    assert len(trips) == 7, trips
    await hub.flush()
    assert hub.said(dm)[-1] != before


def hub_item(hub: Hub, room_id: str, sender: str, body: str) -> InboxItem:
    return InboxItem(
        event_id="$ordinary",
        room_id=room_id,
        sender=sender,
        ts=int(hub.clock().timestamp() * 1000),
        kind="text",
        body=body,
        encrypted=True,
        decrypted=True,
        sender_key=f"curve:{sender}",
    )
