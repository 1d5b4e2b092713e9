"""The real bridge in a process of its own, killed with SIGKILL at a chosen crash point.

Run as ``python -m tests.journeys.crashbot SPEC.json``. The spec names the bot's
account and data dir and, optionally, ``point`` and ``nth``: the bridge runs
until the ``nth`` time it passes ``point`` and then kills itself with SIGKILL,
exactly as ``kill -9`` would, with no cleanup of any kind. Without a point it
runs until terminated. Every crash point passed is appended to ``trace``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from bridge.app import Bridge
from e2ecounsel.config import BridgeConfig
from e2ecounsel.sealing import Sealer


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    config = BridgeConfig(
        homeserver_url=spec["homeserver_url"],
        bot_user_id=spec["user_id"],
        bot_password=spec["password"],
        data_dir=Path(spec["data_dir"]),
        policies_dir=None,
        supervisors_room=None,
        allowed_servers=(),
    )
    trace = Path(spec["trace"])
    seen: Counter[str] = Counter()

    def crash_point(name: str) -> None:
        seen[name] += 1
        with trace.open("a") as f:
            f.write(f"{name}\n")
        if name == spec.get("point") and seen[name] == spec.get("nth", 1):
            os.kill(os.getpid(), signal.SIGKILL)

    async def run() -> None:
        bridge = Bridge(
            config, Sealer(bytes.fromhex(spec["key"])), tick_seconds=0.5, crash_point=crash_point
        )
        await bridge.start()
        await asyncio.to_thread(Path(spec["ready"]).write_text, "ready")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await bridge.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1])
