"""Retention at the handler tier: the cadence feature's daily purge."""

from __future__ import annotations

from datetime import timedelta

from bridge.features.cadence import Cadence
from bridge.persistence.store import ClientRecord
from tests.handlers.kit import Hub


async def _engagement(hub: Hub, client: str) -> int:
    if await hub.store.get_counselor("@co:x") is None:
        await hub.counselor("@co:x", "Co")
    await hub.store.save_client(ClientRecord(user_id=client))
    eng = await hub.store.open_engagement(client)
    return (await hub.store.assign(eng.id, "@co:x", f"!room-{client}")).id


async def test_retention_forgets_clients_closed_longer_ago_than_policy_allows(hub: Hub) -> None:
    store = hub.store
    old = await _engagement(hub, "@old:x")
    recent = await _engagement(hub, "@recent:x")
    await _engagement(hub, "@active:x")
    days = hub.policy.service.retention.default_days
    t0 = hub.clock()
    for eng, closed in ((old, t0), (recent, t0 + timedelta(days=days - 1))):
        await store.close_engagement(eng, "resolved")
        await store.db.execute(
            "UPDATE engagements SET closed_at = ? WHERE id = ?", (closed.isoformat(), eng)
        )
    hub.clock.advance(days=days + 1)
    assert await Cadence(hub.ctx).purge(hub.clock()) == 1
    assert await store.get_client("@old:x") is None
    assert await store.get_client("@recent:x") is not None
    assert await store.get_client("@active:x") is not None
    lines = await store.audit_lines(user_id="@old:x")
    assert [line.action for line in lines] == ["retention.purge"]
