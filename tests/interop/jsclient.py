"""Drives the black-box matrix-js-sdk client (``js/client.mjs``) over JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"


def ensure_node_modules() -> str:
    """Path to ``node``; installs the pinned packages with ``npm ci`` when missing.

    Skips (with the reason) only when Node.js itself is absent.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the interop tests need `node` and `npm`")
    marker = JS_DIR / "node_modules" / "matrix-js-sdk" / "package.json"
    if not marker.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the interop tests need it to install matrix-js-sdk")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--engine-strict=false"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"npm ci failed in {JS_DIR}:\n{proc.stdout}\n{proc.stderr}")
    return node


class JsClient:
    """One running ``client.mjs`` process: send a command, get its JSON answer."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self._proc = proc
        self.log_path = log_path
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, node: str, log_path: Path) -> JsClient:
        log = log_path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "client.mjs"),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            limit=2**22,
        )
        log.close()
        client = cls(proc, log_path)
        hello = await client._read(timeout=60)
        assert hello.get("cmd") == "hello", hello
        return client

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"the JS client did not answer in {timeout}s; see {self.log_path}"
            ) from None
        if not line:
            raise AssertionError(f"the JS client exited; see {self.log_path}:\n{self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Run one command; raise AssertionError with the JS error if it failed.

        ``args`` go to the JS side as they are (``timeout`` included, in seconds);
        we wait for the answer a minute longer than that.
        """
        wait = float(args.get("timeout", 60)) + 60
        async with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            await self._proc.stdin.drain()
            answer = await self._read(wait)
        if not answer.get("ok"):
            raise AssertionError(f"JS command {cmd} failed: {answer.get('error')}")
        return answer

    async def close(self) -> None:
        if self._proc.returncode is not None:
            return
        try:
            await self.call("quit")
        except AssertionError:
            pass
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
