"""The bridge's data access over real SQLite and PostgreSQL: every method, constraints, sealing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.persistence.store import (
    BridgeStore,
    ClientRecord,
    Counselor,
    DuplicateError,
    OutboxItem,
    iso,
)
from e2ecounsel.errors import StorageError
from e2ecounsel.sealing import Sealer
from tests.clock import Clock
from tests.pgkit import Target

KEY = bytes(range(1, 33))
CANARY = "canary-Zq81-sealed-only"
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def counselor(user_id: str = "@dewi:example.org", **changes: object) -> Counselor:
    base = Counselor(
        user_id=user_id,
        name="Dewi Lestari",
        credentials="M.Psi., Psikolog",
        languages=("id", "en"),
        specialties=("anxiety", "career"),
        capacity=3,
        timezone="Asia/Jakarta",
        reply_windows=("09:00", "13:00", "19:00"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2ECOUNSEL_SEALING_KEY", raising=False)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def store(database_target: Target, clock: Clock) -> AsyncIterator[BridgeStore]:
    s = await BridgeStore.open(database_target, Sealer(KEY), clock=clock)
    try:
        yield s
    finally:
        await s.close()


async def add_client(store: BridgeStore, user_id: str = "@client:example.org") -> ClientRecord:
    return await store.save_client(ClientRecord(user_id, dm_room_id=f"!dm-{user_id}"))


# ---------------------------------------------------------------------- events


async def test_handled_events_are_recorded_once(store: BridgeStore, clock: Clock) -> None:
    assert not await store.is_handled("$e1")
    assert await store.mark_handled("$e1") is True
    assert await store.mark_handled("$e1") is False
    assert await store.is_handled("$e1")
    clock.advance(days=31)
    await store.mark_handled("$e2")
    assert await store.purge_handled(timedelta(days=30)) == 1
    assert not await store.is_handled("$e1")
    assert await store.is_handled("$e2")


# ---------------------------------------------------------------------- outbox


async def test_outbox_queue_is_idempotent_and_ordered(store: BridgeStore, clock: Clock) -> None:
    assert await store.queue("!a", {"body": "first"}, "t1") is True
    assert await store.queue("!a", {"body": "changed"}, "t1") is False
    clock.advance(seconds=1)
    await store.queue("!b", {"body": "second"}, "t2")
    assert await store.unsent() == [
        OutboxItem("t1", "!a", {"body": "first"}),
        OutboxItem("t2", "!b", {"body": "second"}),
    ]
    await store.mark_sent("t1", "$sent1")
    assert [i.txn_id for i in await store.unsent()] == ["t2"]
    assert await store.sent_events("!a") == ["$sent1"]
    clock.advance(days=8)
    assert await store.purge_sent(timedelta(days=7)) == 1
    assert await store.db.fetchval("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL") == 0
    assert await store.sent_events("!a") == ["$sent1"]  # still redactable by id
    assert [i.txn_id for i in await store.unsent()] == ["t2"]


async def test_forget_room_drops_its_outbox_and_room_row(store: BridgeStore) -> None:
    await store.set_room("!s", "session", "@client:example.org")
    await store.queue("!s", {"body": "x"}, "t1")
    await store.mark_sent("t1", "$1")
    await store.queue("!other", {"body": "y"}, "t2")
    await store.forget_room("!s")
    assert await store.room_kind("!s") is None
    assert await store.sent_events("!s") == []
    assert [i.txn_id for i in await store.unsent()] == ["t2"]


# ---------------------------------------------------------------------- clients


async def test_client_round_trip_keeps_created_at(store: BridgeStore, clock: Clock) -> None:
    rec = ClientRecord(
        "@c:example.org",
        dm_room_id="!dm",
        language="id",
        intake={"step": "consent"},
        profile={"pseudonym": "Melati"},
        pending={"ask": "survey"},
    )
    saved = await store.save_client(rec)
    assert saved.created_at == iso(T0)
    assert await store.get_client("@c:example.org") == saved
    clock.advance(hours=1)
    later = await store.save_client(replace(saved, language="en", pending=None, created_at=""))
    assert later.created_at == iso(T0)
    got = await store.client_by_dm("!dm")
    assert got is not None
    assert (got.language, got.pending, got.profile) == ("en", None, {"pseudonym": "Melati"})
    assert await store.get_client("@nobody:example.org") is None
    assert (await store.save_client(ClientRecord("@d:example.org"))).profile == {}


async def test_two_clients_cannot_share_a_dm(store: BridgeStore) -> None:
    await store.save_client(ClientRecord("@a:example.org", dm_room_id="!dm"))
    with pytest.raises(DuplicateError):
        await store.save_client(ClientRecord("@b:example.org", dm_room_id="!dm"))


async def test_delete_client_cascades(store: BridgeStore) -> None:
    await store.add_counselor(counselor())
    client = await add_client(store)
    eng = await store.open_engagement(client.user_id)
    await store.assign(eng.id, "@dewi:example.org", "!session")
    await store.set_room("!session", "session", client.user_id)
    await store.set_room("!dm-x", "dm", client.user_id)
    await store.set_room("!case", "case", "@dewi:example.org")
    await store.audit(client.user_id, "client.erase")

    assert await store.delete_client(client.user_id) is True

    assert await store.get_client(client.user_id) is None
    assert await store.get_engagement(eng.id) is None
    assert await store.engagements_of_client(client.user_id) == []
    assert await store.rooms_of(client.user_id) == []
    assert await store.room_kind("!case") == ("case", "@dewi:example.org")
    assert len(await store.audit_lines(user_id=client.user_id)) == 1
    assert await store.delete_client(client.user_id) is False


# ---------------------------------------------------------------------- counselors


async def test_counselor_roster(store: BridgeStore) -> None:
    dewi = counselor()
    await store.add_counselor(dewi)
    with pytest.raises(DuplicateError, match="already on the roster"):
        await store.add_counselor(dewi)
    assert await store.get_counselor(dewi.user_id) == dewi
    await store.add_counselor(counselor("@adi:example.org", on_call=True))
    assert [c.user_id for c in await store.list_counselors()] == [
        "@adi:example.org",
        "@dewi:example.org",
    ]

    assert await store.update_counselor(replace(dewi, capacity=9, languages=("en",)))
    got = await store.get_counselor(dewi.user_id)
    assert got is not None and (got.capacity, got.languages) == (9, ("en",))
    assert not await store.update_counselor(counselor("@ghost:example.org"))

    assert await store.set_on_call(dewi.user_id, True)
    assert await store.set_case_room(dewi.user_id, "!case")
    assert await store.counselor_by_case_room("!case") == replace(
        dewi, capacity=9, languages=("en",), on_call=True, case_room_id="!case"
    )

    assert await store.deactivate_counselor(dewi.user_id)
    gone = await store.get_counselor(dewi.user_id)
    assert gone is not None and not gone.active and not gone.on_call
    assert [c.user_id for c in await store.list_counselors()] == ["@adi:example.org"]
    assert len(await store.list_counselors(active_only=False)) == 2
    assert not await store.set_on_call("@ghost:example.org", True)


async def test_capacity_must_be_positive(store: BridgeStore) -> None:
    with pytest.raises(StorageError, match="(?i)check"):
        await store.add_counselor(counselor(capacity=0))
    assert await store.list_counselors(active_only=False) == []


# ---------------------------------------------------------------------- engagements


async def test_engagement_lifecycle(store: BridgeStore, clock: Clock) -> None:
    await store.add_counselor(counselor())
    client = await add_client(store)
    eng = await store.open_engagement(client.user_id, share_brief=False)
    assert (eng.status, eng.risk, eng.crisis, eng.share_brief) == ("waiting", "low", False, False)
    assert eng.opened_at == iso(T0)
    assert await store.current_engagement(client.user_id) == eng

    clock.advance(minutes=5)
    active = await store.assign(eng.id, "@dewi:example.org", "!session")
    assert (active.status, active.counselor_id, active.room_id) == (
        "active",
        "@dewi:example.org",
        "!session",
    )
    assert active.assigned_at == iso(T0 + timedelta(minutes=5))
    assert await store.engagement_by_room("!session") == active
    assert await store.active_for_counselor("@dewi:example.org") == [active]
    assert await store.active_engagements() == [active]

    assert await store.set_risk(eng.id, "high")
    assert await store.set_crisis(eng.id, True)
    assert await store.close_engagement(eng.id, "resolved")
    assert not await store.close_engagement(eng.id, "refer")
    closed = await store.get_engagement(eng.id)
    assert closed is not None
    assert (closed.status, closed.outcome, closed.risk, closed.crisis) == (
        "closed",
        "resolved",
        "high",
        True,
    )
    assert closed.closed_at == iso(clock.now)
    assert await store.current_engagement(client.user_id) is None
    assert await store.active_engagements() == []
    with pytest.raises(StorageError):
        await store.assign(eng.id, "@dewi:example.org", "!other")

    assert await store.record_survey(eng.id, 4, CANARY)
    assert await store.survey_comment(eng.id) == CANARY
    again = await store.get_engagement(eng.id)
    assert again is not None and again.survey_score == 4

    second = await store.open_engagement(client.user_id)
    assert await store.last_engagement(client.user_id) == second
    assert [e.id for e in await store.engagements_of_client(client.user_id)] == [eng.id, second.id]


async def test_one_open_engagement_per_client(store: BridgeStore) -> None:
    client = await add_client(store)
    first = await store.open_engagement(client.user_id)
    with pytest.raises(DuplicateError):
        await store.open_engagement(client.user_id)
    assert await store.engagements_of_client(client.user_id) == [first]


async def test_engagement_needs_a_stored_client(store: BridgeStore) -> None:
    with pytest.raises(StorageError, match="not stored"):
        await store.open_engagement("@unknown:example.org")


async def test_waiting_list_order(store: BridgeStore, clock: Clock) -> None:
    for name in ("a", "b", "c"):
        await add_client(store, f"@{name}:example.org")
    first = await store.open_engagement("@a:example.org")
    clock.advance(minutes=1)
    second = await store.open_engagement("@b:example.org")
    clock.advance(minutes=1)
    urgent = await store.open_engagement("@c:example.org", crisis=True)
    assert [e.id for e in await store.waiting()] == [urgent.id, first.id, second.id]


async def test_transaction_groups_calls(store: BridgeStore) -> None:
    client = await add_client(store)
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.open_engagement(client.user_id)
            await store.mark_handled("$x")
            raise RuntimeError("boom")
    assert await store.current_engagement(client.user_id) is None
    assert not await store.is_handled("$x")


async def test_caseloads_skip_dormant_and_closed(store: BridgeStore, clock: Clock) -> None:
    await store.add_counselor(counselor())
    await store.add_counselor(counselor("@adi:example.org"))
    rooms = {}
    for name in ("quiet", "talking", "closed", "waiting"):
        client = await add_client(store, f"@{name}:example.org")
        eng = await store.open_engagement(client.user_id)
        if name != "waiting":
            await store.assign(eng.id, "@dewi:example.org", f"!{name}")
        rooms[name] = eng
    await store.close_engagement(rooms["closed"].id, "resolved")
    assert await store.caseloads(dormant_after_days=14) == {
        "@adi:example.org": 0,
        "@dewi:example.org": 2,
    }

    clock.advance(days=1)
    await store.record_message("!talking", role="client", ts_ms=ms(clock.now))
    clock.advance(days=14)  # "quiet" never wrote: dormant 14 days after assignment
    assert (await store.caseloads(dormant_after_days=14))["@dewi:example.org"] == 1
    clock.advance(days=1)  # now "talking" is silent for 14 days too
    assert (await store.caseloads(dormant_after_days=14))["@dewi:example.org"] == 0

    await store.record_message("!quiet", role="client", ts_ms=ms(clock.now))
    assert (await store.caseloads(dormant_after_days=14))["@dewi:example.org"] == 1


async def test_record_message_tracks_the_oldest_unanswered(store: BridgeStore) -> None:
    await store.add_counselor(counselor())
    client = await add_client(store)
    eng = await store.open_engagement(client.user_id)
    await store.assign(eng.id, "@dewi:example.org", "!s")

    got = await store.record_message("!s", role="client", ts_ms=1_000)
    assert got is not None and (got.awaiting_since, got.last_client_ts) == (1_000, 1_000)
    got = await store.record_message("!s", role="client", ts_ms=2_000)
    assert got is not None and (got.awaiting_since, got.last_client_ts) == (1_000, 2_000)
    got = await store.record_message("!s", role="counselor", ts_ms=3_000)
    assert got is not None and (got.awaiting_since, got.last_counselor_ts) == (None, 3_000)
    # A client message older than the reply was answered by it.
    got = await store.record_message("!s", role="client", ts_ms=2_500)
    assert got is not None and (got.awaiting_since, got.last_client_ts) == (None, 2_500)
    got = await store.record_message("!s", role="client", ts_ms=4_000)
    assert got is not None and got.awaiting_since == 4_000
    # A late-delivered counselor message from before the wait does not end it.
    got = await store.record_message("!s", role="counselor", ts_ms=3_500)
    assert got is not None and (got.awaiting_since, got.last_counselor_ts) == (4_000, 3_500)
    # Replaying an event changes nothing.
    again = await store.record_message("!s", role="client", ts_ms=4_000)
    assert again == got

    assert await store.record_message("!nowhere", role="client", ts_ms=5_000) is None
    await store.close_engagement(eng.id, "resolved")
    assert await store.record_message("!s", role="client", ts_ms=6_000) is None
    with pytest.raises(ValueError):
        await store.record_message("!s", role="bot", ts_ms=7_000)


# ---------------------------------------------------------------------- rooms


async def test_rooms(store: BridgeStore) -> None:
    assert await store.room_kind("!r") is None
    await store.set_room("!r", "dm", "@c:example.org")
    assert await store.room_kind("!r") == ("dm", "@c:example.org")
    await store.set_room("!r", "supervisors", None)
    assert await store.room_kind("!r") == ("supervisors", None)
    await store.set_room("!s", "session", "@c:example.org")
    assert await store.rooms_of("@c:example.org") == [("!s", "session")]


# ---------------------------------------------------------------------- sealing


def _raw_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("bridge.db*")))


async def test_sealed_columns_hold_no_plaintext(tmp_path: Path, clock: Clock) -> None:
    folder = tmp_path / "data"
    store = await BridgeStore.open_data_dir(folder, clock=clock)
    try:
        await store.save_client(
            ClientRecord(
                "@c:example.org",
                dm_room_id="!dm",
                intake={"answer": CANARY},
                profile={"pseudonym": CANARY},
                pending={"comment": CANARY},
            )
        )
        await store.queue("!dm", {"body": CANARY}, "t1")
        eng = await store.open_engagement("@c:example.org")
        await store.record_survey(eng.id, 5, CANARY)
        raw = _raw_bytes(folder)
        assert b"@c:example.org" in raw  # the file was really read
        assert CANARY.encode() not in raw
        client = await store.get_client("@c:example.org")
        assert client is not None and client.profile == {"pseudonym": CANARY}
    finally:
        await store.close()
    assert CANARY.encode() not in _raw_bytes(folder)


async def test_open_data_dir_without_database(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no bridge database"):
        await BridgeStore.open_data_dir(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


# ---------------------------------------------------------------------- follow-ups


async def test_a_follow_up_given_up_is_listed_and_no_longer_due(store: BridgeStore) -> None:
    async with store.transaction():
        await store.add_followup("k1", "erase.room", {"room": "!r:x"})
        await store.add_followup("k2", "leave", {"room": "!r:x"})
    first, second = await store.due_followups()
    await store.followup_failed(first.id)
    assert [f.key for f in await store.due_followups()] == [second.key]
    [failed] = await store.failed_followups()
    assert (failed.id, failed.kind, failed.attempts) == (first.id, "erase.room", 1)
    assert await store.pending_followups() == 1


async def test_the_rooms_of_a_clients_pages_are_read_before_the_erasure(
    store: BridgeStore,
) -> None:
    client = await add_client(store)
    for cause, room in (("e1", "!page:x"), ("e2", None), ("e3", "!page:x")):
        await store.db.execute(
            "INSERT INTO pages (cause, client_id, reason, created_at, room_id)"
            " VALUES (?, ?, 'command:urgent', '2026-03-01', ?)",
            (cause, client.user_id, room),
        )
    assert await store.page_rooms(client.user_id) == ["!page:x"]
    assert await store.delete_client(client.user_id)
    assert await store.page_rooms(client.user_id) == []
