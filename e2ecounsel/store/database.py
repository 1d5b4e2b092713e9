"""The database behind the bridge and the TUI: SQLite or PostgreSQL (psycopg 3).

:meth:`Database.open` takes a path (SQLite) or a ``postgresql://`` URL and
gives the same API on both: ``execute``/``fetchone``/``fetchall``/``fetchval``,
``transaction()``, sealed columns, registered migrations, rows that answer by
position and by name (:class:`~e2ecounsel.store.dialects.Row`) and one
:class:`IntegrityError` for a refused constraint. How one SQL text serves both
dialects is described in :mod:`e2ecounsel.store.dialects`.

One :class:`Database` holds one connection. On SQLite it is a plain ``sqlite3``
connection whose statements run on the event loop's own thread: a statement on a
local file takes a few microseconds, less than handing it to a thread and waking
the loop when it is done (which is what a driver with its own thread, such as
aiosqlite, does for every statement; ``bench/store_statements.py`` measures both).
Only waiting does not belong on the loop: the connection does not wait for a lock
(``busy_timeout`` 0), and a statement SQLite refuses because another process holds
the write lock (a roster command, a second bridge starting) is run again in a
worker thread that waits for it up to :data:`WAIT_FOR_WRITER_MS`. The one statement
that takes longer is the commit that fills the write-ahead log to SQLite's checkpoint
size (about 4 MB) and copies it back into the database file: a few milliseconds, once
every few thousand small commits.

What is left to guard against is two coroutines interleaving statements: an
:class:`asyncio.Lock` makes each transaction exclusive, and a plain statement
from another task waits until the transaction in progress is over (otherwise it
would silently become part of it, and be committed or rolled back with it).

The connection runs in autocommit mode; transactions are explicit ``BEGIN``
… ``COMMIT``/``ROLLBACK`` (on SQLite ``BEGIN IMMEDIATE``, so a writer takes the
write lock up front instead of failing half-way with ``SQLITE_BUSY``). A nested
:meth:`Database.transaction` in the same task becomes a ``SAVEPOINT``. The
``PRAGMAS`` apply to SQLite only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.types.numeric import Int8Dumper

from e2ecounsel.errors import SealingError, StorageError
from e2ecounsel.sealing import Sealer
from e2ecounsel.store.dialects import (
    POSTGRESQL,
    SQLITE,
    Params,
    Row,
    is_dml,
    is_postgres_url,
    pg_row_factory,
    postgres_ddl,
    redact_url,
    to_pyformat,
)
from e2ecounsel.store.migrations import MigrationRegistry

log = logging.getLogger(__name__)

#: Applied to every connection, in this order.
PRAGMAS: tuple[tuple[str, str], ...] = (
    ("busy_timeout", "0"),
    ("foreign_keys", "ON"),
    ("journal_mode", "WAL"),
    ("synchronous", "NORMAL"),
)

#: How long a statement refused for another process's write lock waits for it, in a
#: worker thread (milliseconds).
WAIT_FOR_WRITER_MS = 5000

#: Tries of a pragma SQLite refuses with "locked" (about 5 s in all, as the wait above).
_LOCKED_ATTEMPTS = 14

_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class ExecResult:
    """What a data-changing statement did. ``lastrowid`` is always ``None`` on PostgreSQL."""

    rowcount: int
    lastrowid: int | None


class IntegrityError(Exception):
    """The database refused a write: a UNIQUE, CHECK, NOT NULL or foreign key constraint.

    ``unique`` tells a duplicate apart from the other refusals. Raised by both
    back-ends in place of their own exception (chained as ``__cause__``).
    """

    def __init__(self, message: str, *, unique: bool) -> None:
        super().__init__(message)
        self.unique = unique


def split_sql(script: str) -> list[str]:
    """Split an SQL script into single statements.

    ``sqlite3.Connection.executescript`` would commit the open transaction
    before running, which breaks "one migration, one transaction"; running the
    statements one by one keeps them inside it. ``sqlite3.complete_statement``
    knows about string literals, comments and trigger bodies, so a ``;`` inside
    them does not split.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _has_code(buffer):
                statements.append(buffer.strip())
            buffer = ""
    rest = buffer[:-1]  # drop the ';' added after the last piece
    if _has_code(rest):
        statements.append(rest.strip())
    return statements


def _has_code(sql: str) -> bool:
    """True if ``sql`` holds more than whitespace, comments and semicolons."""
    text = sql
    while True:
        text = text.lstrip().lstrip(";").lstrip()
        if text.startswith("--"):
            newline = text.find("\n")
            text = "" if newline < 0 else text[newline + 1 :]
        elif text.startswith("/*"):
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2 :]
        else:
            return bool(text)


def _prepare_file(path: Path) -> None:
    """Create the folder and an empty 0600 file, or check the existing file's header.

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the main file, so
    creating it 0600 keeps all three private. Runs in a worker thread.
    """
    if path.is_dir():
        raise StorageError(f"database {path} is a folder, not a file; check the data_dir setting")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with path.open("rb") as fh:
                header = fh.read(len(_SQLITE_HEADER))
            if header and header != _SQLITE_HEADER:
                raise StorageError(
                    f"{path} is not an e2ecounsel database (not an SQLite file); "
                    "check the path, or restore a backup"
                ) from None
        else:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot open database {path}: {exc.strerror or exc}") from exc


def _storage_error(path: Path, exc: sqlite3.Error) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_NOTADB:
        return StorageError(
            f"{path} is not an e2ecounsel database (not an SQLite file); "
            "check the path, or restore a backup"
        )
    if code == sqlite3.SQLITE_CORRUPT:
        return StorageError(f"database {path} is damaged ({exc}); restore a backup")
    return StorageError(f"cannot use database {path}: {exc}")


_T = TypeVar("_T")


class _SqliteDriver:
    """One ``sqlite3`` connection, used from the event loop's thread.

    A statement runs where it is called. One refused with ``SQLITE_BUSY`` (another
    process holds the write lock) did nothing; it is run again in a worker thread
    that waits for the lock. A transaction's ``BEGIN IMMEDIATE`` runs with its first
    statement, so a transaction that runs none costs nothing.
    """

    dialect = SQLITE

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path: Path | None = path
        self.location = str(path)
        self._conn = conn
        #: A transaction was begun and its ``BEGIN IMMEDIATE`` not run yet.
        self._begin_pending = False

    @classmethod
    async def connect(cls, path: Path) -> _SqliteDriver:
        await asyncio.to_thread(_prepare_file, path)
        try:
            # The worker thread of a wait uses it too, never at the same time (the
            # caller awaits it, and the Database's lock is held meanwhile).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _storage_error(path, exc) from exc
        conn.row_factory = sqlite3.Row
        return cls(path, conn)

    async def configure(self) -> None:
        try:
            for name, value in PRAGMAS:
                await self._pragma(name, value)
            row = await self.one("PRAGMA journal_mode")
        except sqlite3.Error as exc:
            raise _storage_error(Path(self.location), exc) from exc
        if row is None or str(row[0]).lower() != "wal":
            # Some file systems (network mounts) cannot do WAL; SQLite then keeps
            # its rollback journal, which is slower but still safe.
            log.warning("database %s: WAL journal mode not available", self.location)

    async def _pragma(self, name: str, value: str) -> None:
        """Set one pragma. Switching a new file to WAL needs the file to itself, and SQLite
        answers "locked" at once, without waiting for the lock, while a second process
        opening the same new file holds it for a moment: that switch is tried again."""
        for attempt in range(_LOCKED_ATTEMPTS):
            try:
                await self.run(f"PRAGMA {name}={value}")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == _LOCKED_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))

    def storage_error(self, exc: Exception) -> StorageError | None:
        if isinstance(exc, sqlite3.Error):
            return _storage_error(Path(self.location), exc)
        return None

    @property
    def in_transaction(self) -> bool:
        return self._begin_pending or self._conn.in_transaction

    async def begin(self) -> None:
        self._begin_pending = True

    async def commit(self) -> None:
        if self._begin_pending:
            self._begin_pending = False  # no statement ran: nothing to commit
            return
        await self._step(sqlite3.Connection.commit)

    async def rollback(self) -> None:
        if self._begin_pending:
            self._begin_pending = False
            return
        await self._step(sqlite3.Connection.rollback)

    async def close(self) -> None:
        self._conn.close()

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the connection (after the pending ``BEGIN IMMEDIATE``)."""
        if self._begin_pending:
            self._begin_pending = False
            await self._step(_begin_immediate)
        with _integrity(sqlite3.IntegrityError):
            return await self._step(work)

    async def _step(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return work(self._conn)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        return await self._wait_for_writer(work)

    async def _wait_for_writer(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work`` again, in a worker thread that waits for the write lock. A
        cancellation still lets it end before it goes on (the connection is not
        used by two threads at once, and what it did is known to the caller's
        rollback)."""
        conn = self._conn

        def patiently() -> _T:
            conn.execute(f"PRAGMA busy_timeout={WAIT_FOR_WRITER_MS}").close()
            try:
                return work(conn)
            finally:
                conn.execute("PRAGMA busy_timeout=0").close()

        waiting = asyncio.ensure_future(asyncio.to_thread(patiently))
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            await asyncio.wait([waiting])
            raise

    async def run(self, sql: str, params: Params = ()) -> ExecResult:
        return await self._call(lambda db: _consume(db.execute(sql, params), _exec_result))

    async def many(self, sql: str, rows: Sequence[Params]) -> ExecResult:
        return await self._call(lambda db: _consume(db.executemany(sql, rows), _exec_result))

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._call(
            lambda db: _consume(db.execute(sql, params), sqlite3.Cursor.fetchone)
        )
        return row

    async def all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._call(
            lambda db: _consume(db.execute(sql, params), sqlite3.Cursor.fetchall)
        )

    async def script(self, script: str, *, native: bool) -> None:
        for statement in split_sql(script):
            await self.run(statement)


def _begin_immediate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE").close()


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLite refused for a lock another connection holds; the statement did nothing."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _exec_result(cur: sqlite3.Cursor) -> ExecResult:
    return ExecResult(cur.rowcount, cur.lastrowid)


def _consume(cur: sqlite3.Cursor, use: Callable[[sqlite3.Cursor], _T]) -> _T:
    """``use(cur)``, then close the cursor."""
    try:
        return use(cur)
    finally:
        cur.close()


class _PostgresDriver:
    """One psycopg connection in autocommit mode; see :mod:`e2ecounsel.store.dialects`."""

    dialect = POSTGRESQL
    path: Path | None = None

    def __init__(self, url: str, conn: psycopg.AsyncConnection[Any]) -> None:
        self.location = redact_url(url)
        self._conn = conn

    @classmethod
    async def connect(cls, url: str) -> _PostgresDriver:
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, prepare_threshold=None, row_factory=pg_row_factory
            )
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to database {redact_url(url)}: {_first_line(exc)}; "
                "check the database setting and that PostgreSQL is running"
            ) from exc
        # Our flags are 0/1 integer columns, as in SQLite.
        conn.adapters.register_dumper(bool, Int8Dumper)
        return cls(url, conn)

    async def configure(self) -> None:
        return None

    def storage_error(self, exc: Exception) -> StorageError | None:
        if isinstance(exc, psycopg.Error):
            return StorageError(f"cannot use database {self.location}: {_first_line(exc)}")
        return None

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    async def begin(self) -> None:
        # SQLite's BEGIN IMMEDIATE lets one writer at a time into the database,
        # whatever the process (the bridge, a roster command); code relies on it
        # (the audit chain reads its head, then appends). The same on PostgreSQL:
        # every transaction first takes one advisory lock, held until its end.
        await self._conn.execute("BEGIN")
        await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", [_WRITER_LOCK])

    async def commit(self) -> None:
        await self._conn.execute("COMMIT")

    async def rollback(self) -> None:
        await self._conn.execute("ROLLBACK")

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def _statement(self, sql: str) -> AsyncIterator[None]:
        # A failed statement must not abort the caller's transaction (see the module
        # docstring of e2ecounsel.store.dialects).
        guard = self.in_transaction and is_dml(sql)
        if guard:
            await self._conn.execute("SAVEPOINT e2ecounsel_statement")
        try:
            with _integrity(psycopg.IntegrityError):
                yield
        except BaseException:
            if guard and not self._conn.closed:
                await self._conn.execute("ROLLBACK TO SAVEPOINT e2ecounsel_statement")
                await self._conn.execute("RELEASE SAVEPOINT e2ecounsel_statement")
            raise
        if guard:
            await self._conn.execute("RELEASE SAVEPOINT e2ecounsel_statement")

    async def run(self, sql: str, params: Params = ()) -> ExecResult:
        async with self._statement(sql):
            cur = await self._conn.execute(_pg_sql(sql), _pg_params(params))
            return ExecResult(cur.rowcount, None)

    async def many(self, sql: str, rows: Sequence[Params]) -> ExecResult:
        async with self._statement(sql):
            cur = self._conn.cursor()
            await cur.executemany(_pg_sql(sql), [_pg_params(p) for p in rows])
            return ExecResult(cur.rowcount, None)

    async def one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._statement(sql):
            cur = await self._conn.execute(_pg_sql(sql), _pg_params(params))
            row: Row | None = await cur.fetchone()
            return row

    async def all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._statement(sql):
            cur = await self._conn.execute(_pg_sql(sql), _pg_params(params))
            rows: list[Row] = await cur.fetchall()
            return rows

    async def script(self, script: str, *, native: bool) -> None:
        if native:
            # Written for PostgreSQL (dollar-quoted bodies): one simple query.
            with _integrity(psycopg.IntegrityError):
                await self._conn.execute(script.encode())
            return
        for statement in split_sql(script):
            await self.run(statement)


_Driver = _SqliteDriver | _PostgresDriver

#: The advisory lock key of e2ecounsel's writers (any constant; "e2ecouns" in ASCII).
_WRITER_LOCK = 0x6532_6563_6F75_6E73


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    return to_pyformat(postgres_ddl(sql))


def _pg_params(params: Params) -> list[Any] | dict[str, Any]:
    if isinstance(params, Mapping):
        return dict(params)
    return list(params)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextmanager
def _integrity(kind: type[Exception]) -> Iterator[None]:
    try:
        yield
    except kind as exc:
        unique = isinstance(exc, psycopg.errors.UniqueViolation) or "UNIQUE" in str(exc)
        raise IntegrityError(_first_line(exc), unique=unique) from exc


class Database:
    """An open database (SQLite or PostgreSQL) with its schema up to date.

    Create it with :meth:`open`; do not call the constructor directly.
    """

    def __init__(self, driver: _Driver, sealer: Sealer | None) -> None:
        self._driver = driver
        self._sealer = sealer
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0
        self._dirty = False
        self._closed = False
        self._version = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        target: Path | str,
        registry: MigrationRegistry | None,
        *,
        sealer: Sealer | None = None,
    ) -> Database:
        """Open (or create) the database and apply pending migrations.

        ``target`` is a ``postgresql://user@host/db`` URL or the path of an
        SQLite file. Raises :class:`StorageError` if the file is not an SQLite
        database or the server cannot be reached, if its schema is newer than
        ``registry`` knows (an older e2ecounsel must not write to it), or if a
        migration fails (that migration leaves nothing behind; earlier ones
        stay applied).

        With ``registry=None`` the schema is taken as it is, for a tool that
        only reads a database its program keeps (``e2ecounsel doctor``): no
        migration runs and no table is made.
        """
        driver: _Driver
        if is_postgres_url(target):
            driver = await _PostgresDriver.connect(str(target))
        else:
            driver = await _SqliteDriver.connect(Path(target))
        db = cls(driver, sealer)
        try:
            await driver.configure()
            if registry is not None:
                await db._migrate(registry)
        except BaseException:
            await driver.close()
            db._closed = True
            raise
        return db

    async def _migrate(self, registry: MigrationRegistry) -> None:
        where = self.location
        try:
            async with self.transaction():  # one process at a time creates the table
                await self._run(_SCHEMA_TABLE)
                row = await self._one("SELECT MAX(version) FROM schema_version")
        except Exception as exc:
            error = self._driver.storage_error(exc)
            if error is None:
                raise
            raise error from exc
        current = int(row[0]) if row is not None and row[0] is not None else 0
        if current > registry.latest:
            raise StorageError(
                f"database {where} has schema version {current} but this e2ecounsel "
                f"knows only up to {registry.latest}; upgrade e2ecounsel or restore a "
                "matching backup"
            )
        self._version = current
        for step in registry.pending(current):
            try:
                async with self.transaction():
                    if await self._applied(step.version):
                        # Another process (a second bridge, a roster command) started
                        # at the same time and applied it while this one waited.
                        self._version = step.version
                        continue
                    await step.apply(self)
                    if not self._driver.in_transaction:
                        raise StorageError(
                            f"database {where}: upgrade step {step.version} "
                            f"({step.description}) ended its own transaction; "
                            "this is a bug in e2ecounsel"
                        )
                    await self._run(
                        "INSERT INTO schema_version (version, description, applied_at) "
                        "VALUES (?, ?, ?)",
                        (step.version, step.description, datetime.now(UTC).isoformat()),
                    )
            except StorageError:
                raise
            except Exception as exc:
                log.exception(
                    "database %s: upgrade step %d (%s) failed",
                    where,
                    step.version,
                    step.description,
                )
                raise StorageError(
                    f"database {where}: upgrade step {step.version} "
                    f"({step.description}) failed and was rolled back; see the log, "
                    "then restore a backup or report the problem"
                ) from exc
            self._version = step.version
            log.info(
                "database %s: applied upgrade step %d (%s)",
                where,
                step.version,
                step.description,
            )

    async def _applied(self, version: int) -> bool:
        row = await self._one("SELECT 1 FROM schema_version WHERE version = ?", (version,))
        return row is not None

    async def close(self) -> None:
        """Wait for the transaction in progress, then close. Safe to call twice."""
        if self._closed:
            return
        if self._in_own_transaction():
            raise RuntimeError("close() called inside a transaction of the same task")
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._driver.close()

    # ------------------------------------------------------------ properties

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._driver.dialect

    @property
    def path(self) -> Path | None:
        """The SQLite file; ``None`` on PostgreSQL."""
        return self._driver.path

    @property
    def location(self) -> str:
        """The path or the URL (without password), for messages."""
        return self._driver.location

    @property
    def schema_version(self) -> int:
        """The version of the last migration applied (0 for an empty registry)."""
        return self._version

    @property
    def sealer(self) -> Sealer | None:
        """The sealer given to :meth:`open`; its ``subkey()`` serves other secrets."""
        return self._sealer

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ statements

    async def execute(self, sql: str, params: Params = ()) -> ExecResult:
        """Run one statement. Outside a transaction it commits at once."""
        async with self._access():
            return await self._run(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> ExecResult:
        """Run one statement once per parameter set, atomically."""
        async with self.transaction():
            return await self._driver.many(sql, rows)

    async def execute_script(self, script: str, *, native: bool = False) -> None:
        """Run several statements atomically (see :func:`split_sql`).

        ``native=True``: the script is written for this database's own dialect
        (a trigger body); it is run as it is.
        """
        async with self.transaction():
            await self._driver.script(script, native=native)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._access():
            return await self._one(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._access():
            return await self._driver.all(sql, params)

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """An atomic unit: ``async with db.transaction(): ...``.

        Commits when the block ends normally and rolls back on any exception
        (including cancellation). Statements of other tasks wait until it is
        over. Inside the block, use ``db`` (or the yielded object) as usual; a
        nested ``transaction()`` is a savepoint that rolls back on its own.
        Do not await another task that uses this database from inside the
        block: it would wait for the block to end.
        """
        if self._in_own_transaction():
            async with self._savepoint():
                yield self
            return
        async with self._lock:
            self._check_open()
            if self._dirty:
                await self._driver.rollback()
                self._dirty = False
            await self._driver.begin()
            self._owner = asyncio.current_task()
            try:
                yield self
            except BaseException:
                await self._rollback()
                raise
            else:
                try:
                    await self._driver.commit()
                except BaseException:
                    # A failed COMMIT (a deferred constraint, a full disk) leaves
                    # the transaction open; end it before anyone else goes on.
                    await self._rollback()
                    raise
            finally:
                self._owner = None

    # ------------------------------------------------------------ sealing

    def seal(self, value: str | bytes, *, context: str) -> bytes:
        """Seal ``value`` for a column; ``context`` names it, e.g. ``"engagement.pseudonym"``.

        A sealed value only opens with the same context, so it cannot be moved
        to another column (or row kind) unnoticed.
        """
        return self._require_sealer().seal(value, context=_check_context(context))

    def open_sealed(self, blob: bytes, *, context: str) -> str:
        """Open a value sealed with :meth:`seal` as text; :class:`SealingError` if it won't."""
        try:
            return self.open_sealed_bytes(blob, context=context).decode()
        except UnicodeDecodeError as exc:
            raise SealingError("sealed data is not text") from exc

    def open_sealed_bytes(self, blob: bytes, *, context: str) -> bytes:
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise SealingError("sealed data must be bytes (a BLOB column)")
        return self._require_sealer().open(bytes(blob), context=_check_context(context))

    # ------------------------------------------------------------ internals

    def _require_sealer(self) -> Sealer:
        if self._sealer is None:
            raise StorageError(
                f"database {self.location} was opened without a sealing key; "
                "sealed columns cannot be used"
            )
        return self._sealer

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"database {self.location} is closed")

    def _in_own_transaction(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()

    @asynccontextmanager
    async def _access(self) -> AsyncIterator[None]:
        if self._in_own_transaction():
            yield
            return
        async with self._lock:
            self._check_open()
            yield

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        name = f"sp_{self._depth}"
        self._depth += 1
        try:
            await self._run(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                await self._run(f"ROLLBACK TO {name}")
                await self._run(f"RELEASE {name}")
                raise
            else:
                await self._run(f"RELEASE {name}")
        finally:
            self._depth -= 1

    async def _rollback(self) -> None:
        try:
            await self._driver.rollback()
        except asyncio.CancelledError:
            # The queued ROLLBACK may still run; make sure the next transaction
            # starts clean even so.
            self._dirty = True
            raise
        except Exception:
            self._dirty = True
            log.warning("database %s: rollback failed; retrying before next use", self.location)

    async def _run(self, sql: str, params: Params = ()) -> ExecResult:
        return await self._driver.run(sql, params)

    async def _one(self, sql: str, params: Params = ()) -> Row | None:
        return await self._driver.one(sql, params)


def _check_context(context: str) -> str:
    # An empty context would seal under the root key, shared by every column.
    if not context:
        raise SealingError("a sealed column needs a context, e.g. 'engagement.pseudonym'")
    return context
