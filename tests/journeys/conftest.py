"""Journey tier: the real Synapse, the real bridge (in-process or as a process of its
own that a test kills with SIGKILL), real E2EE clients. The fixtures are those of
the integration tier."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bridge.store import BridgeStore
from e2ecounsel.sealing import Sealer

ROOT = Path(__file__).resolve().parents[2]


async def poll(check: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, what: str) -> None:
    """Wait until the async ``check()`` holds; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@dataclass
class BotProcess:
    """The bridge as a separate process; :meth:`start` may arm one crash point."""

    homeserver_url: str
    user_id: str
    password: str
    work: Path
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    proc: asyncio.subprocess.Process | None = None
    kills: int = 0

    @property
    def data_dir(self) -> Path:
        return self.work / "bridge"

    @property
    def trace(self) -> Path:
        return self.work / "trace"

    async def start(self, point: str | None = None, nth: int = 1) -> None:
        """Start the bridge; return once it is serving (or has already been killed)."""
        assert self.proc is None
        self.work.mkdir(parents=True, exist_ok=True)
        ready = self.work / "ready"
        ready.unlink(missing_ok=True)
        spec = {
            "homeserver_url": self.homeserver_url,
            "user_id": self.user_id,
            "password": self.password,
            "data_dir": str(self.data_dir),
            "key": self.key.hex(),
            "trace": str(self.trace),
            "ready": str(ready),
            "point": point,
            "nth": nth,
        }
        spec_file = self.work / f"spec-{uuid.uuid4().hex[:6]}.json"
        spec_file.write_text(json.dumps(spec))
        log = (self.work / "bridge.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.journeys.crashbot",
            str(spec_file),
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not ready.exists() and self.proc.returncode is None:
            assert loop.time() < deadline, "the bridge did not start"
            await asyncio.sleep(0.1)

    async def killed(self, timeout: float = 60.0) -> bool:
        """Wait for the armed crash point; True if the bridge died by SIGKILL."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return False
        self.proc = None
        if code == -signal.SIGKILL:
            self.kills += 1
            return True
        return False

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        self.proc = None

    @asynccontextmanager
    async def store(self) -> AsyncIterator[BridgeStore]:
        """The bridge's database, while the bridge is down."""
        assert self.proc is None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = await BridgeStore.open(self.data_dir / "bridge.db", Sealer(self.key))
        try:
            yield store
        finally:
            await store.close()
