"""How the counselor app copes with a large caseload.

Seeds a counselor with N client rooms (default 300) on a throw-away local Synapse
(a bot-like account opens session rooms shaped like the bridge's and posts a brief
for each into the case channel; a client writes in each), then measures:

* start → usable queue: from unlocking the store (argon2id, MODERATE) to the
  queue listing every client with its brief and waiting time;
* keystroke → last frame: moving through the queue (each move opens that
  client's thread and card), and Enter to start replying. Measured at the frame
  (a hook on the compositor's output, ``App._display``: the time of the last
  frame the key caused) and as CPU time per key, beside the old method
  (``pilot.press`` + ``pilot.pause()``, whose floor is ~60 ms by construction);
* queue upkeep, CPU: one row changed (an incoming message), the 30 s clock tick
  (every row redrawn in place) and a full rebuild (order changed).

Run: python bench/tui_queue.py [--rooms 300] [--runs 3]
     python bench/tui_queue.py --offline [--rooms 300] [--runs 3]   # the widgets alone
``--runs N`` seeds once and measures N times (a fresh start of the app each
time), then prints each figure's min / median / max over the runs.
``--offline`` fills the app's model in memory (no homeserver, no trust checks) and
measures only the keys at the frame, the layouts each key causes, and the queue's
upkeep: what the widgets cost, apart from the network.
Not a timed test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

#: The code measured: this checkout, or another one (``--baseline`` runs this same
#: file over the code before, in a process of its own).
CODE = Path(os.environ.get("TUI_BENCH_CODE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(CODE))

from nio import InviteMemberEvent  # noqa: E402

from e2ecounsel.homeserver import EmbeddedHomeserver, free_port  # noqa: E402
from tests.integration.matrixkit import ENCRYPTION_STATE, Recorder, until  # noqa: E402
from tests.tui.world import PASSPHRASE, brief_data, case_content  # noqa: E402
from tui.app import app_of_store  # noqa: E402
from tui.connect import connect, unlock_store  # noqa: E402
from tui.notes import MODERATE  # noqa: E402
from tui.settings import TuiSettings  # noqa: E402
from tui.snapshot import SNAPSHOT_FILE  # noqa: E402


class Frames:
    """Timestamps of the frames the app hands to the terminal (headless too)."""

    def __init__(self, app) -> None:
        self.times: list[float] = []
        real = app._display

        def display(screen, renderable) -> None:
            if renderable is not None:
                self.times.append(time.perf_counter())
            real(screen, renderable)

        app._display = display

    async def settle(self, quiet: float = 0.08, timeout: float = 2.0) -> float:
        """Wait until no frame came for ``quiet`` seconds; the last frame's time."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            seen = len(self.times)
            await asyncio.sleep(quiet)
            if len(self.times) == seen:
                break
        return self.times[-1] if self.times else time.perf_counter()


async def at_the_frame(pilot, frames: Frames, key: str) -> tuple[float, float]:
    """(ms from the key to its last frame, ms of CPU for it)."""
    await frames.settle()
    t, cpu = time.perf_counter(), time.process_time()
    await pilot.press(key)
    last = await frames.settle()
    cpu_ms = (time.process_time() - cpu) * 1000
    return max(last - t, 0.0) * 1000, cpu_ms


def at_frame_line(what: str, samples: list[tuple[float, float]]) -> str:
    lat = [a for a, _ in samples]
    cpu = [b for _, b in samples]
    return (
        f"{what}, key -> last frame: p50 {statistics.median(lat):.1f} ms, "
        f"p95 {pct(lat, 95):.1f} ms; CPU per key p50 {statistics.median(cpu):.1f} ms, "
        f"p95 {pct(cpu, 95):.1f} ms"
    )


#: Bound to nothing in the queue: what pressing a key costs the test driver itself.
IDLE_KEY = "x"


def idle_line(samples: list[tuple[float, float]]) -> str:
    return f"CPU p50 {statistics.median(b for _, b in samples):.1f} ms"


def cpu_ms(call) -> float:
    t = time.process_time()
    call()
    return (time.process_time() - t) * 1000


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def account(hs: EmbeddedHomeserver, prefix: str) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    return await hs.register_user(f"{prefix}-{uuid.uuid4().hex[:6]}", password), password


async def seed(
    hs: EmbeddedHomeserver, root: Path, settings: TuiSettings, n: int
) -> tuple[str, str]:
    base = hs.info.base_url
    bot_id, bot_pw = await account(hs, "counsel")
    bot = await Recorder.connect(base, bot_id, bot_pw, root / "bot", secrets.token_bytes(32))
    client_id, client_pw = await account(hs, "client")
    client = await Recorder.connect(
        base, client_id, client_pw, root / "client", secrets.token_bytes(32)
    )
    counselor_id, counselor_pw = await account(hs, "dewi")
    done = await connect(
        settings,
        homeserver=base,
        user_id=counselor_id,
        passphrase=PASSPHRASE,
        password=counselor_pw,
    )
    me = done.session

    async def join(room, event) -> None:
        if event.state_key == counselor_id and event.membership == "invite":
            await me.client.join(room.room_id)

    me.add_event_callback(join, InviteMemberEvent)
    me.start()
    levels = {"state_default": 100, "invite": 100, "kick": 100}
    resp = await bot.session.client.room_create(
        invite=[counselor_id],
        is_direct=True,
        initial_state=[ENCRYPTION_STATE],
        power_level_override={"users": {counselor_id: 50}, **levels},
    )
    case_room = resp.room_id
    gate = asyncio.Semaphore(4)
    rooms: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            r = await bot.session.client.room_create(
                invite=[counselor_id, client_id],
                initial_state=[ENCRYPTION_STATE],
                power_level_override={"users": {counselor_id: 50, client_id: 0}, **levels},
            )
            rooms.append(r.room_id)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    await until(
        lambda: (
            all(bot.joined(r, counselor_id) and bot.joined(r, client_id) for r in rooms)
            and bot.joined(case_room, counselor_id)
        ),
        timeout=600,
        what="everyone joined",
    )
    print(f"seeded {n} rooms in {time.perf_counter() - t:.0f}s; writing briefs and messages…")
    for i, room in enumerate(rooms):
        risk = "high" if i % 25 == 0 else "low"
        content = case_content("brief", i + 1, room, brief_data(f"Client{i:03d}", risk))
        await bot.session.send(case_room, content)
    for room in rooms:
        await client.session.send_text(room, "hello, is anyone there?")
    await asyncio.sleep(2)  # let the counselor's sync take the last keys before stopping
    await me.close()
    await bot.close()
    await client.close()
    return counselor_id, bot_id


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=300)
    ap.add_argument("--profile", type=Path, default=None, help="cProfile of the keys, to FILE")
    ap.add_argument(
        "--profile-start", type=Path, default=None, help="cProfile of the start-up, to FILE"
    )
    ap.add_argument("--offline", action="store_true", help="the widgets alone, no homeserver")
    ap.add_argument("--runs", type=int, default=1, help="measure N times, then min/median/max")
    ap.add_argument(
        "--sizes",
        default=",".join(map(str, UPKEEP_SIZES)),
        help="queue sizes the upkeep is measured at (comma-separated)",
    )
    ap.add_argument("--upkeep-repeats", type=int, default=10, help="samples per upkeep figure")
    ap.add_argument(
        "--baseline",
        type=lambda path: Path(path).resolve(),
        default=None,
        help="a checkout of the code before (git worktree): its upkeep is measured beside",
    )
    ap.add_argument("--upkeep", action="store_true", help="only the upkeep, no homeserver")
    ap.add_argument("--upkeep-json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upkeep_json is not None:  # the baseline's process: figures to stdout
        sizes = tuple(int(n) for n in args.upkeep_json.split(","))
        figures = {n: await upkeep(n, args.upkeep_repeats) for n in sizes}
        print(json.dumps(figures))
        return
    sizes = tuple(int(n) for n in args.sizes.split(","))
    runs: list[dict[str, float]] = []
    if args.offline or args.upkeep:
        for _ in range(args.runs):
            run = {} if args.upkeep else await offline(args.rooms)
            run |= await upkeep_table(sizes, args.upkeep_repeats, args.baseline)
            runs.append(run)
        summary(runs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hs = EmbeddedHomeserver(root / "hs", port=free_port(), bcrypt_rounds=4)
        await hs.start()
        try:
            settings = TuiSettings(
                data_dir=root / "tui",
                config_dir=root / "cfg",
                kdf=MODERATE,
                bot_user_id="",
            )
            counselor_id, bot_id = await seed(hs, root, settings, args.rooms)
            settings = replace(settings, bot_user_id=bot_id)
            for _ in range(args.runs):
                run = await measure(
                    hs,
                    root,
                    settings,
                    counselor_id,
                    args.rooms,
                    args.profile,
                    args.profile_start,
                )
                run |= await upkeep_table(sizes, args.upkeep_repeats, args.baseline)
                runs.append(run)
        finally:
            await hs.stop()
    summary(runs)


def summary(runs: list[dict[str, float]]) -> None:
    """Each figure's min / median / max over the runs."""
    if len(runs) < 2:
        return
    print(f"\nover {len(runs)} runs: min / median / max")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:<52} {min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}")


def fill(app, n: int) -> None:
    """N clients with briefs and a few messages each, in the app's model, as the
    link would have built it (no homeserver, no trust checks)."""
    from types import SimpleNamespace

    from e2ecounsel.casechannel import CaseEvent
    from tui.link import MatrixLink
    from tui.queue import Message

    app.pop_screen()  # the sign-in: the model is filled here instead
    session = SimpleNamespace(user_id="@me:srv", client=SimpleNamespace(rooms={}))
    link = MatrixLink(session, bot_id="@counsel:srv")  # type: ignore[arg-type]
    now = int(app.now() * 1000)
    for i in range(n):
        room = f"!r{i:04d}:srv"
        link.session_rooms.add(room)
        brief = CaseEvent("brief", i + 1, room, brief_data(f"Client{i:03d}"))
        link.apply_case(brief, now - 100_000)
        entry = link.entry(room)
        for j in range(3 + i % 5):
            body = "hello " * (5 + 7 * j)
            entry.add(Message(f"${i}-{j}", "@c:srv", now - 50_000 + j, body, "client"))
    app.link = link
    app._trust_soon = lambda room_id: None  # no homeserver to ask
    app.history_loaded = True
    app._refresh_queue()


def anew(app) -> None:
    """The queue built from the model from scratch."""
    if hasattr(app, "_rows"):  # the code before rebuilt only when its list of rows differed
        app._rows = []
    app._refresh_queue()


async def ready(app, pilot, n: int) -> Frames:
    """The app over :func:`fill`'s model, the queue focused, frames counted."""
    fill(app, n)
    await pilot.pause()
    frames = Frames(app)
    app.query_one("#composer").cursor_blink = False  # a blink is a frame too
    app.action_focus_queue()
    await pilot.pause()
    return frames


async def offline(n: int) -> dict[str, float]:
    """Keys at the frame over a model filled in memory (:func:`fill`)."""
    import textual.screen

    from tui.app import CounselorApp

    layouts = [0]
    real_layout = textual.screen.Screen._refresh_layout

    def counted(self, *args, **kwargs):
        layouts[0] += 1
        return real_layout(self, *args, **kwargs)

    textual.screen.Screen._refresh_layout = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        app = CounselorApp(TuiSettings(data_dir=Path(tmp), config_dir=Path(tmp)))
        async with app.run_test(size=(120, 36)) as pilot:
            frames = await ready(app, pilot, n)
            before = layouts[0]
            moves = [await at_the_frame(pilot, frames, "down") for _ in range(60)]
            per_key = (layouts[0] - before) / len(moves)
            idle = [await at_the_frame(pilot, frames, IDLE_KEY) for _ in range(20)]
            room = app.queue_entries()[-1].room_id
            one_row = [cpu_ms(lambda: app._refresh_queue({room})) for _ in range(20)]
            tick = [cpu_ms(lambda: app._refresh_queue(everything=True)) for _ in range(10)]
    textual.screen.Screen._refresh_layout = real_layout  # type: ignore[method-assign]
    print(
        f"offline, {n} clients: {at_frame_line('move in queue', moves)}; {per_key:.1f} layouts/key"
    )
    print(f"  a key that changes nothing (the test driver's own cost): {idle_line(idle)}")
    print(
        f"queue upkeep CPU (p50): one row {statistics.median(one_row):.2f} ms, "
        f"clock tick {statistics.median(tick):.2f} ms"
    )
    return {
        "move, key -> last frame p50 (ms)": statistics.median(a for a, _ in moves),
        "move, key -> last frame p95 (ms)": pct([a for a, _ in moves], 95),
        "move, CPU per key p50 (ms)": statistics.median(b for _, b in moves),
        "move, CPU per key p95 (ms)": pct([b for _, b in moves], 95),
        "move, layouts per key": per_key,
        "no-op key, CPU p50 (ms)": statistics.median(b for _, b in idle),
        "queue upkeep CPU, one row (ms)": statistics.median(one_row),
        "queue upkeep CPU, clock tick (ms)": statistics.median(tick),
    }


#: Queue sizes the upkeep is measured at, in every run.
UPKEEP_SIZES = (100, 300, 1000)
#: What each upkeep figure is (printed with the figures).
UPKEEP_OPS = {
    "message": "a message from a client already waiting (their row changes, the order not)",
    "reorder": "a message that moves its client (a reply: to the end; an answer: back up)",
    "Enter": "Enter on a client (the thread counts as read: the unread mark goes)",
    "tick": "the 30 s clock, a minute later (every wait reads differently)",
    "tick, same minute": "the 30 s clock within the same minute (nothing reads differently)",
    "from scratch": "the order taken anew from the model (start, snapshot, history read)",
}


async def upkeep(n: int, repeats: int = 20) -> dict[str, float]:
    """CPU of the queue's upkeep with N clients, each change two ways: the app's
    call alone (the figure this bench printed before) and from the call to the
    last frame it causes (the drawing included), less the same wait with no
    call. Medians of ``repeats``."""
    from tui.app import CounselorApp
    from tui.queue import Message

    clock = [time.time()]
    with tempfile.TemporaryDirectory() as tmp:
        settings = TuiSettings(data_dir=Path(tmp), config_dir=Path(tmp))
        app = CounselorApp(settings, now=lambda: clock[0])
        async with app.run_test(size=(120, 36)) as pilot:
            frames = await ready(app, pilot, n)
            link = app.link
            rooms = [e.room_id for e in app.queue_entries()]
            seq = [0]

            def say(room: str, kind: str) -> None:
                seq[0] += 1
                sender = "@me:srv" if kind == "counselor" else "@c:srv"
                ts = int(clock[0] * 1000) + seq[0]
                link.entry(room).add(Message(f"$u{seq[0]}", sender, ts, "hello", kind))

            def message(i: int) -> None:
                room = rooms[(i * 7) % len(rooms)]
                say(room, "client")
                app._refresh_queue({room})

            def reorder(i: int) -> None:
                room = rooms[(i // 2 * 11) % len(rooms)]
                say(room, "counselor" if i % 2 == 0 else "client")
                app._refresh_queue({room})

            def open_next(i: int) -> None:
                room = rooms[(i * 5) % len(rooms)]
                say(room, "client")  # something unread, for Enter to clear
                app._refresh_queue({room})
                app.open_room(room)

            def enter(i: int) -> None:
                # What Enter does to the queue (the focus change is not the queue's).
                room = app.current
                link.entry(room).mark_read()
                app._refresh_queue({room})

            def tick(i: int) -> None:
                clock[0] += 60
                app._tick()

            def same_minute(i: int) -> None:
                app._tick()

            def from_scratch(i: int) -> None:
                anew(app)

            ops = {  # name -> (unmeasured preparation, the change measured)
                "message": (None, message),
                "reorder": (None, reorder),
                "Enter": (open_next, enter),
                "tick": (None, tick),
                "tick, same minute": (None, same_minute),
                "from scratch": (None, from_scratch),
            }
            for prepare, op in ops.values():  # once each, unmeasured: nothing is cold
                if prepare is not None:
                    prepare(-1)
                op(-1)
            await frames.settle()
            gc.collect()
            idle = []
            for _ in range(repeats):
                await frames.settle()
                t = time.process_time()
                await frames.settle()
                idle.append((time.process_time() - t) * 1000)
            quiet = statistics.median(idle)
            out: dict[str, float] = {}
            for name, (prepare, op) in ops.items():
                calls, framed = [], []
                for i in range(repeats):
                    if prepare is not None:
                        prepare(i)
                    await frames.settle()
                    t = time.process_time()
                    op(i)
                    calls.append((time.process_time() - t) * 1000)
                    await frames.settle()
                    framed.append((time.process_time() - t) * 1000 - quiet)
                out[f"{name}, call"] = statistics.median(calls)
                out[f"{name}, to the frame"] = statistics.median(framed)
    return out


async def upkeep_table(
    sizes: tuple[int, ...], repeats: int, baseline: Path | None
) -> dict[str, float]:
    """The upkeep at each size in this process; with ``baseline``, the same over
    that checkout's code in a process of its own, printed beside."""
    now: dict[int, dict[str, float]] = {n: await upkeep(n, repeats) for n in sizes}
    before: dict[int, dict[str, float]] = {}
    if baseline is not None:
        env = dict(os.environ, TUI_BENCH_CODE=str(baseline))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--upkeep-json",
            ",".join(map(str, sizes)),
            "--upkeep-repeats",
            str(repeats),
            env=env,
            cwd=baseline,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the baseline's upkeep failed ({proc.returncode})")
        done = out.decode()
        before = {int(k): v for k, v in json.loads(done.splitlines()[-1]).items()}
    print(f"\nqueue upkeep, CPU ms (median of {repeats}); 'call': the app's call alone,")
    print("'frame': from the call to the last frame it causes, less an idle wait")
    for op, what in UPKEEP_OPS.items():
        print(f"  {op}: {what}")
    head = "".join(f"{n:>14}" for n in sizes)
    print(f"{'':<30}{head}" + (f"   | before: {head}" if before else ""))
    figures: dict[str, float] = {}
    for op in UPKEEP_OPS:
        for how in ("call", "to the frame"):
            key = f"{op}, {how}"
            row = "".join(f"{now[n][key]:14.2f}" for n in sizes)
            old = "".join(f"{before[n][key]:14.2f}" for n in sizes) if before else ""
            print(f"{key:<30}{row}" + (f"   |         {old}" if before else ""))
            for n in sizes:
                figures[f"upkeep {n}: {key}"] = now[n][key]
                if before:
                    figures[f"upkeep {n}: {key}, before"] = before[n][key]
    return figures


def usable(app, n: int) -> bool:
    """Every client listed with its brief and waiting time."""
    entries = app.queue_entries()
    return len(entries) == n and all(e.brief and e.awaiting for e in entries)


async def first_start(hs, settings, counselor_id, n) -> tuple[float, float]:
    """A start without a snapshot (removed first): (s to a usable queue, s of unlocking).
    Quitting writes the snapshot the next start shows."""
    snapshot = settings.account_dir(counselor_id) / SNAPSHOT_FILE
    if snapshot.exists():
        os.remove(snapshot)
    t0 = time.perf_counter()
    opened = await unlock_store(
        settings, homeserver=hs.info.base_url, user_id=counselor_id, passphrase=PASSPHRASE
    )
    t_unlocked = time.perf_counter() - t0
    app = app_of_store(settings, opened)
    try:
        async with app.run_test(size=(120, 36)):
            await until(
                lambda: app.history_loaded and usable(app, n), timeout=600, what="usable queue"
            )
            t_usable = time.perf_counter() - t0
    finally:
        await opened.session.close()
    return t_usable, t_unlocked


async def measure(
    hs,
    root,
    settings,
    counselor_id,
    n,
    profile: Path | None = None,
    profile_start: Path | None = None,
) -> dict[str, float]:
    t_first, t_unlocked = await first_start(hs, settings, counselor_id, n)
    starting = cProfile.Profile() if profile_start else None
    if starting:
        starting.enable()
    t0, cpu0 = time.perf_counter(), time.process_time()
    opened = await unlock_store(
        settings, homeserver=hs.info.base_url, user_id=counselor_id, passphrase=PASSPHRASE
    )
    assert opened.snapshot.loaded is not None, "the first start wrote no snapshot"
    app = app_of_store(settings, opened)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.queue_ready, timeout=300, what="queue shown")
        t_listed = time.perf_counter() - t0
        await until(lambda: usable(app, n), timeout=600, what="usable queue")
        await pilot.pause()
        t_usable = time.perf_counter() - t0
        cpu_usable = time.process_time() - cpu0
        try:
            await until(lambda: app.history_loaded, timeout=600, what="caught up")
        except AssertionError:
            q = app.queue_entries()
            print(
                f"queue {len(q)} rooms, {sum(1 for e in q if e.brief)} with brief, "
                f"{sum(1 for e in q if e.awaiting)} awaiting, "
                f"{sum(1 for e in q for m in e.messages if m.undecryptable)} undecryptable"
            )
            raise
        await pilot.pause()
        t_caught_up = time.perf_counter() - t0
        if starting:
            starting.disable()
            starting.dump_stats(str(profile_start))
        moves: list[float] = []
        opens: list[float] = []
        app.action_focus_queue()
        await pilot.pause()
        for _ in range(60):
            t = time.perf_counter()
            await pilot.press("down")
            await pilot.pause()
            moves.append((time.perf_counter() - t) * 1000)
        for _ in range(20):
            t = time.perf_counter()
            await pilot.press("enter")
            await pilot.pause()
            opens.append((time.perf_counter() - t) * 1000)
            app.action_focus_queue()
            await pilot.press("down")
            await pilot.pause()
        frames = Frames(app)
        frame_moves: list[tuple[float, float]] = []
        frame_opens: list[tuple[float, float]] = []
        app.query_one("#composer").cursor_blink = False  # a blink is a frame too
        app.action_focus_queue()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        for _ in range(60):
            frame_moves.append(await at_the_frame(pilot, frames, "down"))
        idle = [await at_the_frame(pilot, frames, IDLE_KEY) for _ in range(20)]
        for _ in range(20):
            frame_opens.append(await at_the_frame(pilot, frames, "enter"))
            app.action_focus_queue()
            await pilot.press("down")
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
        room = app.queue_entries()[-1].room_id
        one_row = [cpu_ms(lambda: app._refresh_queue({room})) for _ in range(20)]
        tick = [cpu_ms(lambda: app._refresh_queue(everything=True)) for _ in range(10)]

        rebuilds = [cpu_ms(lambda: anew(app)) for _ in range(10)]
    await opened.session.close()
    noop = statistics.median(b for _, b in idle)
    print(f"\nclients in queue: {n}")
    print(f"unlock (argon2id MODERATE, notes, snapshot read):         {t_unlocked:.2f}s")
    print(f"first start, no snapshot -> usable queue:                 {t_first:.2f}s")
    print(f"start with the snapshot -> queue listed:                  {t_listed:.2f}s")
    print(f"start with the snapshot -> usable queue:                  {t_usable:.2f}s")
    print(f"  CPU of the app's process until then:                    {cpu_usable:.2f}s")
    print(f"start with the snapshot -> caught up (history loaded):    {t_caught_up:.2f}s")
    print(
        f"move in queue (thread + card re-render): p50 {statistics.median(moves):.1f} ms, "
        f"p95 {pct(moves, 95):.1f} ms"
    )
    print(
        f"open thread to reply (Enter):           p50 {statistics.median(opens):.1f} ms, "
        f"p95 {pct(opens, 95):.1f} ms"
    )
    print("  (both above: pilot.press + pilot.pause, the old method; ~60 ms floor)")
    for what, samples in (("move in queue", frame_moves), ("open thread (Enter)", frame_opens)):
        print(at_frame_line(what, samples))
    print(f"  a key that changes nothing (the test driver's own cost): {idle_line(idle)}")
    print(
        f"queue upkeep CPU (p50): one row {statistics.median(one_row):.2f} ms, "
        f"clock tick {statistics.median(tick):.2f} ms, full rebuild "
        f"{statistics.median(rebuilds):.2f} ms"
    )
    move_cpu = statistics.median(b for _, b in frame_moves)
    print(f"  move, the app's CPU per key (p50 total - no-op key): {move_cpu - noop:.1f} ms")
    return {
        "unlock (s)": t_unlocked,
        "first start, no snapshot -> usable (s)": t_first,
        "snapshot start -> queue listed (s)": t_listed,
        "snapshot start -> usable queue (s)": t_usable,
        "snapshot start -> usable, app CPU (s)": cpu_usable,
        "snapshot start -> caught up (s)": t_caught_up,
        "move, old method p50 (ms)": statistics.median(moves),
        "move, old method p95 (ms)": pct(moves, 95),
        "move, key -> last frame p50 (ms)": statistics.median(a for a, _ in frame_moves),
        "move, key -> last frame p95 (ms)": pct([a for a, _ in frame_moves], 95),
        "move, CPU per key p50 (ms)": statistics.median(b for _, b in frame_moves),
        "move, CPU per key p95 (ms)": pct([b for _, b in frame_moves], 95),
        "no-op key, CPU p50 (ms)": noop,
        "move, app's CPU per key p50 (ms)": move_cpu - noop,
        "Enter, key -> last frame p95 (ms)": pct([a for a, _ in frame_opens], 95),
        "Enter, CPU per key p50 (ms)": statistics.median(b for _, b in frame_opens),
        "queue upkeep CPU, one row (ms)": statistics.median(one_row),
        "queue upkeep CPU, clock tick (ms)": statistics.median(tick),
        "queue upkeep CPU, full rebuild (ms)": statistics.median(rebuilds),
    }


if __name__ == "__main__":
    asyncio.run(main())
