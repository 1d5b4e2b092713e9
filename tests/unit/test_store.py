"""The store over a real SQLite file and a real PostgreSQL: migrations, transactions, sealing.

Tests taking ``target`` (or ``db``) run on both back-ends; the others are about
the SQLite file itself (pragmas, file modes, a damaged file).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from e2ecounsel.errors import SealingError, StorageError
from e2ecounsel.sealing import Sealer
from e2ecounsel.store import Database, IntegrityError, MigrationRegistry, split_sql
from tests.pgkit import Target

KEY = bytes(range(32))
CANARY = "canary-Kj7Qz9-plaintext"

STEPS = [
    (
        "engagement table",
        """
        CREATE TABLE engagement (
            id        INTEGER PRIMARY KEY,
            pseudonym BLOB NOT NULL
        );
        CREATE INDEX engagement_pseudonym ON engagement (pseudonym);
        """,
    ),
    (
        "booking table",
        """
        CREATE TABLE booking (
            id            INTEGER PRIMARY KEY,
            engagement_id INTEGER NOT NULL REFERENCES engagement (id),
            starts_at     TEXT NOT NULL,
            UNIQUE (starts_at)
        );
        """,
    ),
    ("engagement risk", "ALTER TABLE engagement ADD COLUMN risk TEXT NOT NULL DEFAULT 'low';"),
]


def make_registry(count: int, applied: list[int] | None = None) -> MigrationRegistry:
    """The first ``count`` steps of STEPS; ``applied`` records which steps ran."""
    registry = MigrationRegistry()
    for index, (description, sql) in enumerate(STEPS[:count], start=1):

        @registry.register(description)
        async def step(db: Database, sql: str = sql, version: int = index) -> None:
            if applied is not None:
                applied.append(version)
            await db.execute_script(sql)

    return registry


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bridge.db"


@pytest.fixture
def target(database_target: Target) -> Target:
    return database_target


@pytest.fixture
async def db(target: Target) -> AsyncIterator[Database]:
    database = await Database.open(target, make_registry(3), sealer=Sealer(KEY))
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def sqlite_db(db_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(db_path, make_registry(3), sealer=Sealer(KEY))
    try:
        yield database
    finally:
        await database.close()


def _query(target: Target, sql: str) -> list[tuple[object, ...]]:
    """Rows read with the plain sqlite3 module or psycopg, independent of the store."""
    if isinstance(target, str):
        with psycopg.connect(target) as pg:
            return list(pg.execute(sql).fetchall())
    with sqlite3.connect(target) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def sqlite_tables(target: Target) -> set[str]:
    if isinstance(target, str):
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {str(name) for (name,) in _query(target, sql)}


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_versions(target: Target) -> list[int]:
    rows = _query(target, "SELECT version FROM schema_version ORDER BY version")
    return [int(str(v)) for (v,) in rows]


# ------------------------------------------------------------------ registry


def test_registry_numbers_steps_in_order() -> None:
    registry = MigrationRegistry()
    assert registry.latest == 0

    @registry.register("first")
    async def first(db: Database) -> None:
        return None

    registry.add_sql("second", "CREATE TABLE t (x INTEGER);")
    assert registry.latest == 2
    assert [(m.version, m.description) for m in registry] == [(1, "first"), (2, "second")]
    assert registry.migrations[0].apply is first  # the decorator returns the function
    assert [m.version for m in registry.pending(1)] == [2]


def test_split_sql_keeps_literals_comments_and_triggers_whole() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'a;b');
    /* block; comment */
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        INSERT INTO a VALUES ('y'); DELETE FROM a WHERE 0;
    END;
    ;
    INSERT INTO a VALUES ('z')
    -- trailing comment
    """
    statements = split_sql(script)
    assert len(statements) == 3
    assert "'a;b'" in statements[0]
    assert statements[1].rstrip().endswith("END;")
    assert statements[2].startswith("INSERT INTO a VALUES ('z')")
    assert split_sql("-- nothing here;\n  ;  ") == []


# ------------------------------------------------------------------ migrations


async def test_fresh_database_gets_every_migration(target: Target) -> None:
    applied: list[int] = []
    database = await Database.open(target, make_registry(3, applied))
    try:
        assert database.schema_version == 3
        rows = await database.fetchall(
            "SELECT version, description, applied_at FROM schema_version"
        )
        assert [(r["version"], r["description"]) for r in rows] == [
            (1, "engagement table"),
            (2, "booking table"),
            (3, "engagement risk"),
        ]
        assert all(r["applied_at"] for r in rows)
    finally:
        await database.close()
    assert applied == [1, 2, 3]
    assert {"engagement", "booking", "schema_version"} <= sqlite_tables(target)


async def test_upgrade_applies_only_new_steps(target: Target) -> None:
    applied: list[int] = []
    database = await Database.open(target, make_registry(2, applied))
    assert database.schema_version == 2
    await database.close()
    assert applied == [1, 2]
    assert "risk" not in _columns(target, "engagement")

    applied.clear()
    database = await Database.open(target, make_registry(3, applied))
    await database.close()
    assert applied == [3]
    assert sqlite_versions(target) == [1, 2, 3]
    assert "risk" in _columns(target, "engagement")

    applied.clear()
    database = await Database.open(target, make_registry(3, applied))
    await database.close()
    assert applied == []  # reopening an up-to-date database changes nothing


def _columns(target: Target, table: str) -> set[str]:
    if isinstance(target, str):
        sql = (
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = current_schema() AND table_name = '{table}'"
        )
        return {str(name) for (name,) in _query(target, sql)}
    return {str(row[1]) for row in _query(target, f"PRAGMA table_info({table})")}


async def test_failing_migration_leaves_nothing_behind(target: Target) -> None:
    registry = make_registry(2)
    registry.add_sql(
        "broken step",
        """
        CREATE TABLE half_done (x INTEGER);
        INSERT INTO half_done VALUES (1);
        INSERT INTO no_such_table VALUES (1);
        """,
    )
    with pytest.raises(StorageError) as err:
        await Database.open(target, registry)
    message = str(err.value)
    assert str(target) in message
    assert "upgrade step 3 (broken step) failed and was rolled back" in message
    assert "half_done" not in sqlite_tables(target)
    assert sqlite_versions(target) == [1, 2]  # earlier steps stay applied

    # After the fix ships, the step runs normally.
    fixed = make_registry(2)
    fixed.add_sql("fixed step", "CREATE TABLE half_done (x INTEGER);")
    database = await Database.open(target, fixed)
    assert database.schema_version == 3
    await database.close()


async def test_failing_python_migration_rolls_back_its_writes(target: Target) -> None:
    registry = make_registry(1)

    @registry.register("data step that fails half-way")
    async def step(db: Database) -> None:
        await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x00",))
        raise ValueError("boom")

    with pytest.raises(StorageError, match="upgrade step 2"):
        await Database.open(target, registry)
    assert _query(target, "SELECT COUNT(*) FROM engagement") == [(0,)]
    assert sqlite_versions(target) == [1]


async def test_migration_that_commits_by_itself_is_refused(target: Target) -> None:
    registry = MigrationRegistry()

    @registry.register("commits on its own")
    async def step(db: Database) -> None:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.execute("COMMIT")

    with pytest.raises(StorageError, match="ended its own transaction"):
        await Database.open(target, registry)
    assert sqlite_versions(target) == []


async def test_database_newer_than_code_is_refused(target: Target) -> None:
    database = await Database.open(target, make_registry(3))
    await database.close()

    with pytest.raises(StorageError) as err:
        await Database.open(target, make_registry(2))
    assert str(err.value) == (
        f"database {target} has schema version 3 but this e2ecounsel knows only up to 2; "
        "upgrade e2ecounsel or restore a matching backup"
    )
    assert sqlite_versions(target) == [1, 2, 3]


def _put(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database, just some text\n" * 10,
        b"\x00" * 100,
        # A valid header followed by garbage: found only by SQLite itself.
        b"SQLite format 3\x00" + bytes(range(256)) * 16,
    ],
)
async def test_garbage_file_is_refused_naming_it(db_path: Path, content: bytes) -> None:
    _put(db_path, content)
    with pytest.raises(StorageError) as err:
        await Database.open(db_path, make_registry(1))
    assert str(db_path) in str(err.value)
    assert "not an e2ecounsel database" in str(err.value) or "damaged" in str(err.value)
    assert file_bytes(db_path) == content


async def test_folder_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a folder"):
        await Database.open(tmp_path, make_registry(1))


# ------------------------------------------------------------------ connection


async def test_pragmas_are_in_effect(sqlite_db: Database) -> None:
    db = sqlite_db
    assert db.dialect == "sqlite"
    assert await db.fetchval("PRAGMA foreign_keys") == 1
    assert await db.fetchval("PRAGMA journal_mode") == "wal"
    assert await db.fetchval("PRAGMA synchronous") == 1  # NORMAL
    # The event loop's thread never waits for a lock; a worker thread does.
    assert await db.fetchval("PRAGMA busy_timeout") == 0


async def test_foreign_keys_and_unique_constraints_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError) as refused:
        await db.execute(
            "INSERT INTO booking (engagement_id, starts_at) VALUES (?, ?)", (999, "2030-01-01")
        )
    assert not refused.value.unique
    new_id = await db.fetchval(
        "INSERT INTO engagement (pseudonym) VALUES (?) RETURNING id",
        (db.seal("a", context="e.p"),),
    )
    assert isinstance(new_id, int)
    result = await db.execute(
        "INSERT INTO booking (engagement_id, starts_at) VALUES (?, ?)",
        (new_id, "2030-01-01T09:00"),
    )
    assert result.rowcount == 1
    with pytest.raises(IntegrityError) as duplicate:
        await db.execute(
            "INSERT INTO booking (engagement_id, starts_at) VALUES (?, ?)",
            (new_id, "2030-01-01T09:00"),
        )
    assert duplicate.value.unique
    assert await db.fetchval("SELECT COUNT(*) FROM booking") == 1


async def test_database_file_is_private(sqlite_db: Database, db_path: Path) -> None:
    assert file_mode(db_path) == 0o600


async def test_close_is_idempotent_and_final(target: Target) -> None:
    database = await Database.open(target, make_registry(1))
    await database.close()
    await database.close()
    with pytest.raises(StorageError, match="closed"):
        await database.fetchall("SELECT 1")


# ------------------------------------------------------------------ transactions


async def _count(db: Database) -> int:
    value = await db.fetchval("SELECT COUNT(*) FROM engagement")
    assert isinstance(value, int)
    return value


async def test_transaction_commits_or_rolls_back_as_a_whole(db: Database) -> None:
    async with db.transaction():
        await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x01",))
        await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x02",))
    assert await _count(db) == 2

    with pytest.raises(RuntimeError, match="stop"):
        async with db.transaction():
            await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x03",))
            assert await _count(db) == 3  # visible inside the transaction
            raise RuntimeError("stop")
    assert await _count(db) == 2


async def test_an_sqlite_transaction_takes_the_write_lock_with_its_first_statement(
    sqlite_db: Database, db_path: Path
) -> None:
    conn = sqlite_db._driver._conn  # type: ignore[attr-defined]
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    other = sqlite3.connect(db_path, timeout=0)
    try:
        async with sqlite_db.transaction():
            assert await _count(sqlite_db) == 0  # a read first, and already the writer
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await sqlite_db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x01",))
        assert [s.split()[0] for s in statements] == ["BEGIN", "SELECT", "INSERT", "COMMIT"]
        assert statements[0] == "BEGIN IMMEDIATE"
        async with sqlite_db.transaction():
            pass  # nothing ran: nothing to begin or commit
        assert len(statements) == 4
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
    finally:
        conn.set_trace_callback(None)
        other.close()
    assert await _count(sqlite_db) == 1


async def test_a_write_waits_for_another_process_without_holding_up_the_loop(
    sqlite_db: Database, db_path: Path
) -> None:
    """Statements run on the loop's thread, so a wait for another writer's lock must
    not: the loop goes on (here: a ticker) while the write waits, then the write lands."""
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        writing = asyncio.create_task(
            sqlite_db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x07",))
        )
        await asyncio.sleep(0.3)
        assert not writing.done()  # still waiting for the lock
        assert ticks >= 10  # and the loop went on meanwhile
        other.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x06",))
        other.execute("COMMIT")
        await asyncio.wait_for(writing, timeout=5)
    finally:
        ticking.cancel()
        if other.in_transaction:
            other.rollback()
        other.close()
    rows = await sqlite_db.fetchall("SELECT pseudonym AS p FROM engagement ORDER BY id")
    assert [bytes(r["p"]) for r in rows] == [b"\x06", b"\x07"]
    # Back on the loop's thread, without waiting: the next statement is not slowed.
    assert await sqlite_db.fetchval("PRAGMA busy_timeout") == 0


async def test_a_transaction_cancelled_while_it_waits_for_the_lock_leaves_nothing(
    sqlite_db: Database, db_path: Path
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def write() -> None:
            async with sqlite_db.transaction():
                await sqlite_db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x08",))

        task = asyncio.create_task(write())
        await asyncio.sleep(0.2)
        task.cancel()
        other.rollback()  # the waiting BEGIN now gets the lock, and is rolled back
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
    finally:
        if other.in_transaction:
            other.rollback()
        other.close()
    assert await _count(sqlite_db) == 0
    async with sqlite_db.transaction():  # the connection is usable again
        await sqlite_db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x09",))
    assert await _count(sqlite_db) == 1
    other = sqlite3.connect(db_path, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # nobody holds the lock any more
        other.rollback()
    finally:
        other.close()


async def test_nested_transaction_is_a_savepoint(db: Database) -> None:
    async with db.transaction():
        await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x01",))
        with pytest.raises(KeyError):
            async with db.transaction():
                await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x02",))
                raise KeyError("inner")
        async with db.transaction():
            await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\x03",))
    rows = await db.fetchall("SELECT pseudonym AS p FROM engagement ORDER BY id")
    assert [bytes(r["p"]) for r in rows] == [b"\x01", b"\x03"]


async def test_other_tasks_wait_for_an_open_transaction(db: Database) -> None:
    inserted = asyncio.Event()
    finish = asyncio.Event()

    async def writer() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\xaa",))
            inserted.set()
            await finish.wait()
            raise RuntimeError("abandon")

    async def reader() -> list[str]:
        rows = await db.fetchall("SELECT pseudonym AS p FROM engagement")
        return [bytes(r["p"]).hex() for r in rows]

    writing = asyncio.create_task(writer())
    await asyncio.wait_for(inserted.wait(), timeout=5)
    reading = asyncio.create_task(reader())
    done, _ = await asyncio.wait({reading}, timeout=0.3)
    finish.set()  # end the writer before asserting, so a failure cannot hang the fixture
    with pytest.raises(RuntimeError, match="abandon"):
        await asyncio.wait_for(writing, timeout=5)
    seen = await asyncio.wait_for(reading, timeout=5)

    assert not done, "a read from another task ran inside someone else's transaction"
    assert seen == []  # it never saw the rolled-back row


async def test_concurrent_transactions_do_not_interleave(db: Database) -> None:
    async def add(n: int) -> None:
        async with db.transaction():
            await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (bytes([n]),))
            await asyncio.sleep(0)  # give the other tasks a chance to barge in
            await db.execute(
                "UPDATE engagement SET risk = 'high' WHERE pseudonym = ?", (bytes([n]),)
            )

    await asyncio.wait_for(asyncio.gather(*(add(n) for n in range(20))), timeout=30)
    assert await db.fetchval("SELECT COUNT(*) FROM engagement WHERE risk = 'high'") == 20


async def test_cancelled_transaction_rolls_back(db: Database) -> None:
    inserted = asyncio.Event()

    async def writer() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\xbb",))
            inserted.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(writer())
    await asyncio.wait_for(inserted.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _count(db) == 0
    async with db.transaction():  # the connection is usable again
        await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (b"\xcc",))
    assert await _count(db) == 1


# ------------------------------------------------------------------ sealed columns


async def test_sealed_column_round_trip_and_no_plaintext_on_disk(
    sqlite_db: Database, db_path: Path
) -> None:
    db = sqlite_db
    sealed = db.seal(CANARY, context="engagement.pseudonym")
    await db.execute("INSERT INTO engagement (pseudonym) VALUES (?)", (sealed,))
    blob = await db.fetchval("SELECT pseudonym FROM engagement")
    assert isinstance(blob, bytes)
    assert db.open_sealed(blob, context="engagement.pseudonym") == CANARY
    with pytest.raises(SealingError):
        db.open_sealed(blob, context="engagement.topic")

    on_disk = _all_bytes(db_path)  # main file, -wal and -shm while open
    await db.close()
    on_disk += _all_bytes(db_path)
    assert CANARY.encode() not in on_disk
    assert CANARY.encode("utf-16-le") not in on_disk


def _all_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


async def test_sealed_bytes_and_other_key(
    db: Database, database_factory: Callable[[], Target]
) -> None:
    sealed = db.seal(b"\x00\x01 raw", context="note.body")
    assert db.open_sealed_bytes(sealed, context="note.body") == b"\x00\x01 raw"
    other = await Database.open(
        database_factory(), make_registry(1), sealer=Sealer(bytes(range(1, 33)))
    )
    try:
        with pytest.raises(SealingError, match="wrong sealing key"):
            other.open_sealed(sealed, context="note.body")
    finally:
        await other.close()


async def test_sealing_needs_a_key_and_a_context(
    db: Database, database_factory: Callable[[], Target]
) -> None:
    with pytest.raises(SealingError, match="context"):
        db.seal("x", context="")
    plain = await Database.open(database_factory(), make_registry(1))
    try:
        with pytest.raises(StorageError, match="without a sealing key"):
            plain.seal("x", context="engagement.pseudonym")
    finally:
        await plain.close()


async def test_open_creates_the_data_folder_privately(tmp_path: Path) -> None:
    path = tmp_path / "new" / "x.db"
    database = await Database.open(path, MigrationRegistry())
    await database.close()
    assert path.is_file()
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert os.access(path, os.R_OK | os.W_OK)


async def test_two_processes_opening_at_once_apply_each_step_once(target: Target) -> None:
    applied: list[int] = []
    first, second = await asyncio.gather(
        Database.open(target, make_registry(3, applied)),
        Database.open(target, make_registry(3, applied)),
    )
    try:
        assert first.schema_version == second.schema_version == 3
    finally:
        await first.close()
        await second.close()
    assert sorted(applied) == [1, 2, 3]
    assert sqlite_versions(target) == [1, 2, 3]
