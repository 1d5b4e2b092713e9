"""The trust policy's key cache: who is looked up, when, and how often."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from e2ecounsel.matrix import trust as trust_module
from e2ecounsel.matrix.trust import TrustPolicy


class _Client:
    """Just enough of nio's client: no crypto, so nothing is fed to a device store."""

    olm = None
    user_id = "@bot:x"


class Lookups(list[list[str]]):
    """Every ``/keys/query`` the policy makes, as the sorted users it asked about.
    Clearing ``gate`` holds the answers back."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def query_keys(self, client: Any, user_ids: Any) -> dict[str, Any]:
        users = sorted(set(user_ids))
        self.append(users)
        await self.gate.wait()
        return {"device_keys": {u: {} for u in users}}


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    seen = Lookups()
    monkeypatch.setattr(trust_module, "query_keys", seen.query_keys)
    return seen


async def test_without_a_change_feed_every_check_asks(lookups: Lookups) -> None:
    policy = TrustPolicy()
    await policy.ensure_fresh(_Client(), ["@a:x"])
    await policy.ensure_fresh(_Client(), ["@a:x"])
    assert lookups == [["@a:x"], ["@a:x"]]


async def test_a_followed_user_is_asked_about_again_only_after_a_change(
    lookups: Lookups,
) -> None:
    policy = TrustPolicy()
    policy.follow_changes()
    client = _Client()
    await policy.ensure_fresh(client, ["@a:x", "@b:x"])
    await policy.ensure_fresh(client, ["@a:x", "@b:x"])
    assert lookups == [["@a:x", "@b:x"]]
    policy.devices_changed(["@b:x"])
    assert policy.stale_users() == {"@b:x"}
    await policy.ensure_fresh(client, ["@a:x", "@b:x"])
    assert lookups[-1] == ["@b:x"] and len(lookups) == 2
    policy.forget(["@a:x"])
    assert policy.stale_users() == set()  # nobody reports on @a any more: asked for on next use
    await policy.ensure_fresh(client, ["@a:x"])
    assert lookups[-1] == ["@a:x"]


async def test_invited_users_are_asked_about_every_time(lookups: Lookups) -> None:
    policy = TrustPolicy()
    policy.follow_changes()
    client = _Client()
    await policy.ensure_fresh(client, ["@a:x", "@guest:x"], volatile={"@guest:x"})
    await policy.ensure_fresh(client, ["@a:x", "@guest:x"], volatile={"@guest:x"})
    assert lookups == [["@a:x", "@guest:x"], ["@guest:x"]]


async def test_concurrent_checks_share_one_lookup_and_a_change_meanwhile_asks_again(
    lookups: Lookups,
) -> None:
    policy = TrustPolicy()
    policy.follow_changes()
    client = _Client()
    lookups.gate.clear()
    first = asyncio.create_task(policy.ensure_fresh(client, ["@a:x"]))
    second = asyncio.create_task(policy.ensure_fresh(client, ["@a:x"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert lookups == [["@a:x"]]
    policy.devices_changed(["@a:x"])  # reported while the lookup is under way
    lookups.gate.set()
    await asyncio.gather(first, second)
    assert lookups == [["@a:x"], ["@a:x"]]
    assert not policy.is_stale("@a:x")
