"""Fixtures for the interop tests: the black-box JS client and our peers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from e2ecounsel.sealing import Sealer
from tests.interop.jsclient import JsClient, ensure_node_modules

StartJs = Callable[[str], Awaitable[JsClient]]


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js, with matrix-js-sdk installed from the committed lock file."""
    return ensure_node_modules()


@pytest_asyncio.fixture(loop_scope="session")
async def js_factory(node: str, tmp_path: Path) -> AsyncIterator[StartJs]:
    """``start(name)`` runs a fresh JS client process; all are stopped after the test."""
    started: list[JsClient] = []

    async def start(name: str) -> JsClient:
        client = await JsClient.start(node, tmp_path / f"js-{name}.log")
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(os.urandom(32))
