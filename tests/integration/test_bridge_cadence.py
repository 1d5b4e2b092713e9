"""Reply rounds, SLA reminders, escalation, bookings and crash safety of reminders.

Real Synapse, real bridge, real E2EE clients. Time is an injected clock that
the tests move forward; the scheduler is then asked to fire what is due, as
its alarm would.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bridge.persistence.bookings import Bookings
from bridge.persistence.store import BridgeStore
from bridge.scheduler import DurableScheduler
from e2ecounsel.config import BridgeConfig, write_config
from e2ecounsel.policy import MisfirePolicy
from e2ecounsel.sealing import Sealer, load_or_create_key
from tests.clock import Clock
from tests.integration.bridgekit import (
    POLICY,
    BotEnv,
    Chat,
    counselor_record,
    make_bot,
    person,
    seat_client,
    supervisors_room,
    text,
)
from tests.integration.matrixkit import Recorder, until

SVC = POLICY.service


@pytest.fixture
async def people(homeserver, user_factory, tmp_path) -> AsyncIterator[dict[str, Recorder]]:
    made = {
        name: await person(homeserver, user_factory, tmp_path, name)
        for name in ("dewi", "supervisor", "client", "other")
    }
    yield made
    for who in made.values():
        await who.close()


@pytest.fixture
async def clocked_bot(
    homeserver, tmp_path, people, bridge_database
) -> AsyncIterator[tuple[BotEnv, Clock]]:
    env = await make_bot(homeserver, tmp_path, bridge_database)
    env.supervisors_room = await supervisors_room(people["supervisor"], env.user_id)
    clock = Clock()
    env.clock = clock
    await env.start()
    await until(
        lambda: people["supervisor"].joined(env.supervisors_room, env.user_id),
        what="bot joins the supervisors' room",
    )
    assert env.bridge is not None
    # One reply window a day, 18 hours after the test starts, whatever the wall clock:
    # the digest comes once, between the SLA reminder (12 h) and the escalation (24 h).
    window = (clock() + timedelta(hours=18)).astimezone(ZoneInfo("Asia/Jakarta"))
    await env.bridge.store.add_counselor(
        counselor_record(
            people["dewi"].session.user_id,
            "Dewi",
            capacity=5,
            timezone="Asia/Jakarta",
            reply_windows=(f"{window:%H:%M}",),
        )
    )
    yield env, clock
    await env.stop()


async def case_channel(env: BotEnv, counselor: Recorder) -> Chat:
    store = env.bridge.store  # type: ignore[union-attr]
    found: list[str] = []

    async def poll() -> None:
        c = await store.get_counselor(counselor.session.user_id)
        if c and c.case_room_id:
            found.append(c.case_room_id)

    for _ in range(200):
        await poll()
        if found:
            break
        await asyncio.sleep(0.05)
    room = found[0]
    await until(lambda: counselor.joined(room, counselor.session.user_id), what="case channel")
    return Chat(counselor, room, env.user_id)


async def jobs(env: BotEnv, kind: str) -> list:
    return [j for j in await env.bridge.scheduler.pending() if j.kind == kind]  # type: ignore


async def test_a_waiting_client_reminds_then_escalates(clocked_bot, people):
    env, clock = clocked_bot
    seated = await seat_client(env, people["client"], "Dewi", pseudonym="Kabut")
    case = await case_channel(env, people["dewi"])
    await case.expect(lambda b: "Kabut" in b)  # the brief

    await seated.room.send("are you there?")
    await until(
        lambda: "are you there?" in people["dewi"].bodies(seated.room.room_id),
        what="counselor reads the client",
    )
    for _ in range(200):
        if await jobs(env, "sla.remind") and await jobs(env, "sla.escalate"):
            break
        await asyncio.sleep(0.05)
    remind = (await jobs(env, "sla.remind"))[0]
    assert remind.due - clock() == pytest.approx(
        timedelta(hours=SVC.sla_hours), abs=timedelta(minutes=1)
    )

    # Before the SLA: nothing.
    clock.advance(hours=SVC.sla_hours - 1)
    await env.bridge.scheduler.run_due()
    # Past the SLA: the counselor is reminded, in their case channel, decrypted.
    clock.advance(hours=1, minutes=1)
    await env.bridge.scheduler.run_due()
    link = f"https://matrix.to/#/{seated.room.room_id}"
    hours = f"{SVC.sla_hours:g}"
    await case.expect(text("en", "sla.reminder", pseudonym="Kabut", hours=hours, room_link=link))
    sup = Chat(people["supervisor"], env.supervisors_room, env.user_id)
    assert sup.bot_messages() == []
    # Past escalation: the supervisors' room hears of it, without the pseudonym.
    clock.advance(hours=SVC.escalate_hours - SVC.sla_hours)
    await env.bridge.scheduler.run_due()
    got = await sup.expect(lambda b: link in b)
    assert got == text(
        "en",
        "sla.escalation",
        counselor_name="Dewi",
        hours=f"{SVC.escalate_hours:g}",
        room_link=link,
    )
    assert "Kabut" not in got
    # A reply window passed meanwhile: the digest lists who waits (pseudonyms only).
    digest = await case.expect(lambda b: b.startswith(text("en", "digest.header", count=1)))
    assert f"Kabut, waiting {SVC.escalate_hours:g} h" in digest and link in digest
    assert people["dewi"].undecryptable == [] and people["supervisor"].undecryptable == []

    # The counselor answers: the next wait starts a new clock, the old one is spent.
    await people["dewi"].session.send_text(seated.room.room_id, "I'm here")
    await until(
        lambda: "I'm here" in people["client"].bodies(seated.room.room_id), what="reply arrives"
    )
    for _ in range(200):
        eng = await env.bridge.store.engagement_by_room(seated.room.room_id)
        if eng.awaiting_since is None:
            break
        await asyncio.sleep(0.05)
    assert eng.awaiting_since is None
    assert await case.quiet(1.0) == []


async def test_booking_race_and_reminders_on_both_sides(clocked_bot, people):
    env, clock = clocked_bot
    bookings = Bookings(env.bridge.store)  # type: ignore[union-attr]
    await bookings.set_schedule(
        people["dewi"].session.user_id, availability="mon-sun 00:00-23:59", days_off=""
    )
    first = await seat_client(env, people["client"], "Dewi", pseudonym="Satu")
    second = await seat_client(env, people["other"], "Dewi", pseudonym="Dua")
    case = await case_channel(env, people["dewi"])

    for seated in (first, second):
        await seated.dm.send("book")
        await seated.dm.expect(lambda b: b.startswith("Available times"))
    # Both pick the first slot at the same moment: exactly one gets it.
    await asyncio.gather(first.dm.send("1"), second.dm.send("1"))
    replies = await asyncio.gather(
        first.dm.expect(lambda b: b.startswith(("Booked:", "Sorry"))),
        second.dm.expect(lambda b: b.startswith(("Booked:", "Sorry"))),
    )
    assert sorted(r.split(":")[0].split(",")[0] for r in replies) == ["Booked", "Sorry"]
    loser = first if replies[0].startswith("Sorry") else second
    winner = second if loser is first else first
    assert "Available times" in replies[0 if loser is first else 1]  # offered the next slots
    rows = await env.bridge.store.db.fetchall(  # type: ignore[union-attr]
        "SELECT starts_at FROM bookings WHERE status = 'booked'"
    )
    assert len(rows) == 1
    starts = datetime.fromisoformat(rows[0]["starts_at"])

    # The loser takes the next slot instead.
    await loser.dm.send("1")
    await loser.dm.expect(lambda b: b.startswith("Booked:"))
    await case.expect(lambda b: b.startswith("New booking"))

    # 15 minutes before: both sides are reminded; at the start, a note in the room.
    clock.now = starts - timedelta(minutes=15) + timedelta(seconds=1)
    await env.bridge.scheduler.run_due()
    await winner.room.expect(lambda b: b.startswith("Reminder: your live session with Dewi"))
    await case.expect(lambda b: b.startswith("Reminder: live session with"))
    clock.now = starts + timedelta(seconds=1)
    await env.bridge.scheduler.run_due()
    await winner.room.expect(text("en", "reminder.starting", counselor_name="Dewi"))

    # status shows the booking; cancel frees it and tells the counselor.
    await loser.dm.send("status")
    await loser.dm.expect(lambda b: "Your counselor is Dewi" in b and "with Dewi" in b)
    await loser.dm.send("cancel 1")
    await loser.dm.expect(lambda b: b.startswith("Your session on"))
    await case.expect(lambda b: b.startswith("A booking on"))


async def test_sigkill_never_loses_or_duplicates_a_reminder(homeserver, user_factory, tmp_path):
    """Kill -9 the bridge repeatedly while reminders fall due; each arrives exactly once."""
    env = await make_bot(homeserver, tmp_path)
    data = env.base
    data.mkdir(parents=True, exist_ok=True)
    key_file = data / "sealing.key"
    key = load_or_create_key(key_file)
    cfg_path = data / "bridge.toml"
    write_config(
        cfg_path,
        BridgeConfig(
            homeserver_url=homeserver.info.base_url,
            bot_user_id=env.user_id,
            bot_password=env.password,
            data_dir=data,
            policies_dir=None,
            supervisors_room=None,
            allowed_servers=(),
        ),
    )
    watcher = await person(homeserver, user_factory, tmp_path, "watcher")
    procs: list[asyncio.subprocess.Process] = []

    async def launch() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "e2ecounsel",
            "bridge",
            "--config",
            str(cfg_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert b"bridge online" in line, line
        return proc

    try:
        proc = await launch()
        room = await watcher.create_encrypted_room([env.user_id])
        await until(lambda: watcher.joined(room, env.user_id), what="bot joins")
        proc.send_signal(signal.SIGTERM)
        await proc.wait()

        n = 30
        store = await BridgeStore.open(data / "bridge.db", Sealer(key))
        sched = DurableScheduler(store, misfire=MisfirePolicy(900, "fire-late"))
        soon = datetime.now(UTC) + timedelta(seconds=4)
        for i in range(n):
            await sched.schedule(
                "notice",
                soon + timedelta(milliseconds=150 * i),
                room,
                key=f"kill:{i}",
                payload={"body": f"reminder {i}"},
            )
        await store.close()

        rng = random.Random(7)
        for _ in range(4):
            proc = await launch()
            await asyncio.sleep(rng.uniform(0.5, 3.0))  # chaos: die at an arbitrary moment
            proc.kill()
            await proc.wait()
        proc = await launch()
        want = [f"reminder {i}" for i in range(n)]
        await until(
            lambda: set(watcher.bodies(room, sender=env.user_id)) >= set(want),
            timeout=120,
            what="all reminders delivered",
        )
        await asyncio.sleep(1.0)  # and nothing more after that
        got = watcher.bodies(room, sender=env.user_id)
        assert sorted(got) == sorted(want), "a reminder was lost or sent twice"
        assert watcher.undecryptable == []
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await watcher.close()
