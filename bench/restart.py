"""Bridge restart with many rooms, next to a bare matrix-nio restart.

Run from the repository root::

    python -m bench.restart                 # 2000 rooms, 3 restarts of each kind
    python -m bench.restart --rooms 500 --repeats 1
    python -m bench.restart --rooms 2000 5000 --repeats 1 --deadline 900  # ~15 minutes

An embedded Synapse in a temporary directory; one bot account in N encrypted rooms
(created through the API, nothing else in them). Three kinds of restart, alternated,
each from the state the previous start of its kind left:

* **bare nio**: a matrix-nio client of the same account on its own device, restored
  from its store, then the first sync as a nio bot must do it (``full_state``, nio
  keeps rooms in memory only), then the device-list query ``sync_forever`` would do;
* **bridge, full state**: the bridge's start as it was, with ``resume_lazily`` off;
* **bridge**: the bridge's start as it is (``Bridge.start`` until it returns, ready
  to answer: store, sign-in check, cross-signing check, first sync, scheduler).

Printed: min / median / max seconds per kind, and the ratio of medians to bare nio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, LoginResponse, RoomCreateResponse

from bench.bridge_latency import ENCRYPTION_STATE, bounded, bridge_config, register
from bridge.app import Bridge
from e2ecounsel.homeserver import EmbeddedHomeserver, free_port
from e2ecounsel.sealing import Sealer

logger = logging.getLogger("bench.restart")


def _nio_client(base: str, user_id: str, store: Path) -> AsyncClient:
    store.mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    return AsyncClient(base, user_id, store_path=str(store), config=config)


async def _make_rooms(base: str, user_id: str, password: str, store: Path, n: int) -> None:
    client = _nio_client(base, user_id, store)
    try:
        resp = await client.login(password, device_name="bench set-up")
        assert isinstance(resp, LoginResponse), resp

        async def one() -> None:
            for _ in range(20):
                r = await client.room_create(initial_state=[ENCRYPTION_STATE])
                if isinstance(r, RoomCreateResponse):
                    return
                await asyncio.sleep(float(getattr(r, "retry_after_ms", 1000) or 1000) / 1000)
            raise RuntimeError("room creation keeps failing")

        await bounded(8, [one() for _ in range(n)])
    finally:
        await client.close()


class BareNio:
    """A nio bot of the bot's account, on its own device, restored from its store."""

    def __init__(self, base: str, user_id: str, store: Path) -> None:
        self.base, self.user_id, self.store = base, user_id, store
        self.device_id = ""
        self.token = ""

    async def first_start(self, password: str) -> None:
        client = _nio_client(self.base, self.user_id, self.store)
        try:
            resp = await client.login(password, device_name="bare nio")
            assert isinstance(resp, LoginResponse), resp
            self.device_id, self.token = resp.device_id, resp.access_token
            await client.keys_upload()
            await client.sync(timeout=0, full_state=True)
        finally:
            await client.close()

    async def restart(self) -> int:
        client = _nio_client(self.base, self.user_id, self.store)
        try:
            client.restore_login(self.user_id, self.device_id, self.token)
            await client.sync(timeout=0, full_state=True)
            if client.should_query_keys:
                await client.keys_query()
            return len(client.rooms)
        finally:
            await client.close()


class BridgeStarts:
    """The bridge on its data dir; ``restart`` times a start until ready."""

    def __init__(self, base: str, user_id: str, password: str, data_dir: Path) -> None:
        self.config = bridge_config(base, user_id, password, data_dir)
        self.sealer = Sealer(secrets.token_bytes(32))
        self.known: list[str] | None = None  # room ids a full-state start saw

    async def restart(self, *, lazily: bool) -> tuple[float, int, float]:
        """(seconds to ready, rooms in memory, seconds to load one quiet room after)."""
        bridge = Bridge(self.config, self.sealer)
        bridge.session.resume_lazily = lazily
        t0 = time.perf_counter()
        try:
            await bridge.start()
            ready = time.perf_counter() - t0
            rooms = bridge.session.client.rooms
            count = len(rooms)
            if lazily:
                assert self.known, "a full-state start comes first: it lists the rooms"
                t1 = time.perf_counter()
                loaded = await bridge.session.load_room(self.known[len(self.known) // 2])
                assert loaded is not None and loaded.encrypted
                return ready, count, time.perf_counter() - t1
            self.known = sorted(rooms)
            return ready, count, 0.0
        finally:
            await bridge.stop()


Times = dict[str, list[float]]


async def measure(
    bridge: BridgeStarts, bare: BareNio, repeats: int
) -> tuple[Times, dict[str, int], list[float]]:
    """``repeats`` rounds of the three kinds of restart, alternated."""
    times: Times = {"bare nio": [], "bridge, full state": [], "bridge": []}
    rooms: dict[str, int] = {}
    first_use: list[float] = []
    for i in range(repeats):
        t = time.perf_counter()
        rooms["bare nio"] = await bare.restart()
        times["bare nio"].append(time.perf_counter() - t)
        took, rooms["bridge, full state"], _ = await bridge.restart(lazily=False)
        times["bridge, full state"].append(took)
        took, rooms["bridge"], load = await bridge.restart(lazily=True)
        times["bridge"].append(took)
        first_use.append(load)
        logger.info("round %d of %d done", i + 1, repeats)
    return times, rooms, first_use


def table(n: int, repeats: int, times: Times, rooms: dict[str, int], first_use: list[float]) -> str:
    base_median = statistics.median(times["bare nio"])
    lines = [
        f"restart with {n} rooms, {repeats} restart(s) of each kind",
        f"{'kind':<22}{'min s':>8}{'median s':>10}{'max s':>8}{'ratio':>8}{'rooms':>8}",
    ]
    for kind, values in times.items():
        median = statistics.median(values)
        lines.append(
            f"{kind:<22}{min(values):>8.2f}{median:>10.2f}{max(values):>8.2f}"
            f"{median / base_median:>8.2f}{rooms[kind]:>8}"
        )
    lines.append(
        f"bridge, first use of a quiet room after the restart (its state fetched): "
        f"{statistics.median(first_use) * 1000:.0f} ms median"
    )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    sizes = sorted(set(args.rooms))
    with tempfile.TemporaryDirectory(prefix="e2ecounsel-restart-", ignore_cleanup_errors=True) as d:
        root = Path(d)
        hs = EmbeddedHomeserver(root / "hs", port=free_port(), bcrypt_rounds=4)
        await hs.start()
        try:
            base = hs.info.base_url
            bot_id, bot_pw = await register(hs, "counsel")
            bridge = BridgeStarts(base, bot_id, bot_pw, root / "bridge")
            await bridge.restart(lazily=False)  # first start: sign-in, cross-signing
            bare = BareNio(base, bot_id, root / "bare")
            await bare.first_start(bot_pw)
            made = 0
            for n in sizes:
                t = time.perf_counter()
                await _make_rooms(base, bot_id, bot_pw, root / "setup", n - made)
                logger.info("%d rooms created in %.0fs", n - made, time.perf_counter() - t)
                made = n
                # Both see every room once, as a running bot would have before it stopped.
                await bridge.restart(lazily=False)
                await bare.restart()
                print(
                    table(n, args.repeats, *await measure(bridge, bare, args.repeats)), flush=True
                )
        finally:
            await hs.stop()
    print("rooms: rooms in the client's memory when ready (a lazy bridge loads rooms on use)")
    print("ratio: median over the bare nio restart's median, measured in the same run")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.restart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--rooms",
        type=int,
        nargs="+",
        default=[2000],
        help="rooms of the bot (default 2000); several sizes, say 2000 5000, are measured"
        " one after the other on the same account, the rooms made up to each size in turn",
    )
    ap.add_argument("--repeats", type=int, default=3, help="restarts of each kind (default 3)")
    ap.add_argument(
        "--deadline", type=float, default=1800.0, help="seconds before giving up (default 1800)"
    )
    ap.add_argument("--log-level", default="ERROR", help="libraries' log level (default ERROR)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.INFO)
    try:
        return asyncio.run(asyncio.wait_for(run(args), args.deadline))
    except TimeoutError:
        logger.error("abandoned after %.0fs (everything was stopped)", args.deadline)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
