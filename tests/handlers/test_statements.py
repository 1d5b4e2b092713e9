"""What one ordinary intake answer costs the store, statement by statement."""

from __future__ import annotations

from bridge.persistence.inbox import InboxItem
from tests.handlers.kit import Hub


async def test_an_ordinary_intake_answer_takes_eight_statements(hub: Hub) -> None:
    await hub.counselor("@c1:test", "Dewi Lestari")
    client = "@client:test"
    dm = await hub.open_dm(client)
    for answer in ("1", "agree"):
        await hub.event(dm, client, answer)
    conn = hub.store.db._driver._conn  # type: ignore[attr-defined]
    statements: list[str] = []
    before = hub.said(dm)[-1]
    hub.ctx.work._flush = None  # type: ignore[attr-defined]  # the step alone, not the kit's sender
    conn.set_trace_callback(statements.append)
    try:
        await hub.router.handle(hub_item(hub, dm, client, "yes"))
    finally:
        conn.set_trace_callback(None)
    # Handled yet? The room's kind, the client; then one transaction: BEGIN, the
    # client's upsert, the reply queued, the event marked handled, COMMIT. The roster
    # and caseloads are not read for an answer far from the counselor choice.
    assert len(statements) == 8, statements
    assert statements[3] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT", statements
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
