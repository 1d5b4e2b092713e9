from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from e2ecounsel.policy import Policy, load_policy
from tests.handlers.kit import Hub, open_hub


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(None)


@pytest.fixture
async def hub(tmp_path: Path, policy: Policy) -> AsyncIterator[Hub]:
    hub = await open_hub(tmp_path / "bridge.db", policy)
    yield hub
    await hub.store.close()
