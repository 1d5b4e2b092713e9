"""Shared fixtures: a real Synapse for the integration tier, and account helpers.

The session-wide homeserver starts only when a test asks for it, so the unit tier never pays
for Synapse. Passwords are hashed with few bcrypt rounds there: account creation is otherwise
dominated by hashing, which tells us nothing.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from e2ecounsel.homeserver import EmbeddedHomeserver, free_port

_INTEGRATION_DIRS = ("integration", "interop", "journeys")
_TESTS_ROOT = Path(__file__).resolve().parent

MakeUser = Callable[[str], Awaitable[tuple[str, str]]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration and tests/interop as `integration`."""
    for item in items:
        try:
            relative = item.path.resolve().relative_to(_TESTS_ROOT)
        except ValueError:
            continue
        if relative.parts and relative.parts[0] in _INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


def make_homeserver(data_dir: Path) -> EmbeddedHomeserver:
    """An embedded homeserver for tests: its own port, fast password hashing."""
    return EmbeddedHomeserver(data_dir, port=free_port(), bcrypt_rounds=4)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def homeserver(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[EmbeddedHomeserver]:
    """One running Synapse shared by the whole test session."""
    server = make_homeserver(tmp_path_factory.mktemp("homeserver"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def user_factory(homeserver: EmbeddedHomeserver) -> MakeUser:
    """Return ``make_user(prefix) -> (user_id, password)`` registering a fresh account."""

    async def make_user(prefix: str) -> tuple[str, str]:
        localpart = f"{prefix.lower()}-{uuid.uuid4().hex[:10]}"
        password = secrets.token_urlsafe(16)
        user_id = await homeserver.register_user(localpart, password)
        return user_id, password

    return make_user


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_homeserver(tmp_path: Path) -> AsyncIterator[EmbeddedHomeserver]:
    """A running homeserver of the test's own, for tests that stop and restart it."""
    server = make_homeserver(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
