"""The hash-chained audit trail: a changed, removed or moved row is found, and nobody is named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.persistence import audit
from bridge.persistence.store import BridgeStore
from e2ecounsel.cli import main
from e2ecounsel.sealing import Sealer
from e2ecounsel.store import POSTGRESQL, IntegrityError
from tests.pgkit import Target

KEY = bytes(range(2, 34))
CLIENT = "@melati:example.org"
COUNSELOR = "@dewi:example.org"
ROWS = 6


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2ECOUNSEL_SEALING_KEY", raising=False)


@pytest.fixture
async def store(database_target: Target) -> AsyncIterator[BridgeStore]:
    s = await BridgeStore.open(
        database_target, Sealer(KEY), clock=lambda: datetime(2025, 1, 1, tzinfo=UTC)
    )
    try:
        yield s
    finally:
        await s.close()


async def fill(store: BridgeStore, count: int = ROWS) -> None:
    actors = [CLIENT, COUNSELOR, "operator"]
    for i in range(count):
        await store.audit(
            actors[i % 3], "engagement.risk", engagement_id=i, detail=f"level:{i % 3}"
        )


async def unguard(store: BridgeStore) -> None:
    """What someone editing the file would do first: drop the append-only guards."""
    on_table = " ON audit" if store.db.dialect == POSTGRESQL else ""
    await store.db.execute(f"DROP TRIGGER audit_no_update{on_table}")
    await store.db.execute(f"DROP TRIGGER audit_no_delete{on_table}")


async def test_intact_chain_verifies(store: BridgeStore) -> None:
    assert await store.verify_audit() == audit.AuditReport(True, 0)
    await fill(store)
    report = await store.verify_audit()
    assert report == audit.AuditReport(True, ROWS)
    assert [line.seq for line in await store.audit_lines()] == list(range(1, ROWS + 1))


async def test_changed_action_is_found(store: BridgeStore) -> None:
    await fill(store)
    await unguard(store)
    await store.db.execute("UPDATE audit SET action = 'client.erase' WHERE seq = 3")
    report = await store.verify_audit()
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert report.problem == "was changed after it was written"


async def test_changed_actor_or_time_is_found(store: BridgeStore) -> None:
    await fill(store)
    await unguard(store)
    await store.db.execute("UPDATE audit SET at = '2030-01-01T00:00:00.000+00:00' WHERE seq = 5")
    assert (await store.verify_audit()).first_bad_seq == 5


async def test_removed_middle_row_is_found(store: BridgeStore) -> None:
    await fill(store)
    await unguard(store)
    await store.db.execute("DELETE FROM audit WHERE seq = 4")
    report = await store.verify_audit()
    assert (report.ok, report.first_bad_seq, report.rows) == (False, 4, ROWS - 1)


async def test_removed_first_row_is_found(store: BridgeStore) -> None:
    await fill(store)
    await unguard(store)
    await store.db.execute("DELETE FROM audit WHERE seq = 1")
    assert (await store.verify_audit()).first_bad_seq == 1


async def test_removed_last_row_is_found(store: BridgeStore) -> None:
    await fill(store)
    await unguard(store)
    await store.db.execute("DELETE FROM audit WHERE seq = ?", (ROWS,))
    report = await store.verify_audit()
    assert (report.ok, report.first_bad_seq) == (False, ROWS)
    assert "newest" in (report.problem or "")


async def test_reordered_rows_are_found(store: BridgeStore) -> None:
    await fill(store)
    await unguard(store)
    async with store.transaction():
        await store.db.execute("UPDATE audit SET seq = -1 WHERE seq = 2")
        await store.db.execute("UPDATE audit SET seq = 2 WHERE seq = 3")
        await store.db.execute("UPDATE audit SET seq = 3 WHERE seq = -1")
    report = await store.verify_audit()
    assert (report.ok, report.first_bad_seq) == (False, 2)


async def test_rewritten_chain_without_the_key_is_found(store: BridgeStore) -> None:
    """A forger who recomputes every hash with a guessed key still fails."""
    await fill(store)
    await unguard(store)
    wrong = bytes(32)
    rows = await store.db.fetchall("SELECT * FROM audit ORDER BY seq")
    prev = audit.GENESIS
    for row in rows:
        action = "client.erase" if row["seq"] == 2 else row["action"]
        digest = audit._row_hash(
            wrong,
            prev,
            row["seq"],
            row["at"],
            row["actor"],
            action,
            row["engagement_id"],
            row["detail"],
        )
        await store.db.execute(
            "UPDATE audit SET action = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (action, prev, digest, row["seq"]),
        )
        prev = digest
    await store.db.execute("UPDATE audit_head SET hash = ?", (prev,))
    assert (await store.verify_audit()).first_bad_seq == 1


async def test_code_cannot_change_or_delete_lines(store: BridgeStore) -> None:
    await fill(store, 2)
    with pytest.raises(IntegrityError, match="append-only"):
        await store.db.execute("UPDATE audit SET detail = '' WHERE seq = 1")
    with pytest.raises(IntegrityError, match="append-only"):
        await store.db.execute("DELETE FROM audit")
    assert (await store.verify_audit()).ok


async def test_lines_name_nobody(store: BridgeStore) -> None:
    await fill(store)
    actors = [r[0] for r in await store.db.fetchall("SELECT actor FROM audit")]
    assert CLIENT not in actors and COUNSELOR not in actors
    assert not any("example.org" in a for a in actors)
    ref = store.actor_ref(CLIENT)
    assert len(ref) == audit.REF_LENGTH and ref in actors
    assert ref != store.actor_ref(COUNSELOR)
    assert audit.actor_ref(bytes(32), CLIENT) != ref  # keyed: not computable without the key
    mine = await store.audit_lines(user_id=CLIENT)
    assert [line.seq for line in mine] == [1, 4]
    assert {line.actor for line in mine} == {ref}
    assert [line.seq for line in await store.audit_lines(user_id="operator")] == [3, 6]
    assert [line.seq for line in await store.audit_lines(engagement_id=4)] == [5]


@pytest.mark.parametrize(
    "detail",
    ["I feel hopeless", "Melati", "score=27", "x" * 65, "line\nbreak"],
)
async def test_detail_takes_codes_only(store: BridgeStore, detail: str) -> None:
    with pytest.raises(ValueError, match="short code"):
        await store.audit(CLIENT, "client.note", detail=detail)
    assert await store.audit_lines() == []


@pytest.mark.parametrize("actor", ["Melati", "dewi", "melati@example.org", ""])
async def test_actor_is_a_matrix_id_or_a_role(store: BridgeStore, actor: str) -> None:
    with pytest.raises(ValueError, match="Matrix user id"):
        await store.audit(actor, "client.erase")
    assert await store.audit_lines() == []


async def test_audit_line_rolls_back_with_its_transaction(store: BridgeStore) -> None:
    await fill(store, 1)
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.audit(CLIENT, "client.erase")
            raise RuntimeError("boom")
    await store.audit(CLIENT, "client.erase")
    assert await store.verify_audit() == audit.AuditReport(True, 2)


# ---------------------------------------------------------------------- the command


async def _make_trail(folder: Path, *, tamper: str | None) -> None:
    store = await BridgeStore.open_data_dir(folder)
    try:
        await fill(store)
        if tamper is not None:
            await unguard(store)
            await store.db.execute(tamper)
    finally:
        await store.close()


def test_audit_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    folder = tmp_path / "data"
    asyncio.run(_make_trail(folder, tamper=None))
    assert main(["audit", "verify", "--data-dir", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"audit trail intact: {ROWS} rows"

    asyncio.run(_make_trail(tmp_path / "bad", tamper="DELETE FROM audit WHERE seq = 2"))
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "bad")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    assert "audit trail broken at row 2" in lines[0]


def test_audit_verify_without_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bridge database" in err[0]
