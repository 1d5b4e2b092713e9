"""The SQLite database behind the bridge and the TUI, through aiosqlite.

One :class:`Database` holds one connection. aiosqlite runs that connection on
its own thread and executes calls in the order they were queued, so all that is
left to guard against is two coroutines interleaving statements: an
:class:`asyncio.Lock` makes each transaction exclusive, and a plain statement
from another task waits until the transaction in progress is over (otherwise it
would silently become part of it, and be committed or rolled back with it).

The connection runs in autocommit mode (``isolation_level=None``); transactions
are explicit ``BEGIN IMMEDIATE`` … ``COMMIT``/``ROLLBACK`` so a writer takes the
write lock up front instead of failing half-way with ``SQLITE_BUSY``. A nested
:meth:`Database.transaction` in the same task becomes a ``SAVEPOINT``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import aiosqlite

from e2ecounsel.errors import SealingError, StorageError
from e2ecounsel.sealing import Sealer
from e2ecounsel.store.migrations import MigrationRegistry

log = logging.getLogger(__name__)

Params: TypeAlias = Sequence[Any] | Mapping[str, Any]

#: Applied to every connection, in this order.
PRAGMAS: tuple[tuple[str, str], ...] = (
    ("busy_timeout", "5000"),
    ("foreign_keys", "ON"),
    ("journal_mode", "WAL"),
    ("synchronous", "NORMAL"),
)

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
    """What a data-changing statement did."""

    rowcount: int
    lastrowid: int | None


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


class Database:
    """An open SQLite database with its schema up to date.

    Create it with :meth:`open`; do not call the constructor directly.
    """

    def __init__(self, path: Path, conn: aiosqlite.Connection, sealer: Sealer | None) -> None:
        self._path = path
        self._conn = conn
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
        cls, path: Path, registry: MigrationRegistry, *, sealer: Sealer | None = None
    ) -> Database:
        """Open (or create) the database at ``path`` and apply pending migrations.

        Raises :class:`StorageError` if the file is not an SQLite database, if
        its schema is newer than ``registry`` knows (an older e2ecounsel must not
        write to it), or if a migration fails (that migration leaves nothing
        behind; earlier ones stay applied).
        """
        path = Path(path)
        await asyncio.to_thread(_prepare_file, path)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise _storage_error(path, exc) from exc
        conn.row_factory = sqlite3.Row
        db = cls(path, conn, sealer)
        try:
            await db._configure()
            await db._migrate(registry)
        except BaseException:
            await db._conn.close()
            db._closed = True
            raise
        return db

    async def _configure(self) -> None:
        try:
            for name, value in PRAGMAS:
                await self._run(f"PRAGMA {name}={value}")
            row = await self._one("PRAGMA journal_mode")
        except sqlite3.Error as exc:
            raise _storage_error(self._path, exc) from exc
        if row is None or str(row[0]).lower() != "wal":
            # Some file systems (network mounts) cannot do WAL; SQLite then keeps
            # its rollback journal, which is slower but still safe.
            log.warning("database %s: WAL journal mode not available", self._path)

    async def _migrate(self, registry: MigrationRegistry) -> None:
        try:
            await self._run(_SCHEMA_TABLE)
            row = await self._one("SELECT MAX(version) FROM schema_version")
        except sqlite3.Error as exc:
            raise _storage_error(self._path, exc) from exc
        current = int(row[0]) if row is not None and row[0] is not None else 0
        if current > registry.latest:
            raise StorageError(
                f"database {self._path} has schema version {current} but this e2ecounsel "
                f"knows only up to {registry.latest}; upgrade e2ecounsel or restore a "
                "matching backup"
            )
        self._version = current
        for step in registry.pending(current):
            try:
                async with self.transaction():
                    await step.apply(self)
                    if not self._conn.in_transaction:
                        raise StorageError(
                            f"database {self._path}: upgrade step {step.version} "
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
                    self._path,
                    step.version,
                    step.description,
                )
                raise StorageError(
                    f"database {self._path}: upgrade step {step.version} "
                    f"({step.description}) failed and was rolled back; see the log, "
                    "then restore a backup or report the problem"
                ) from exc
            self._version = step.version
            log.info(
                "database %s: applied upgrade step %d (%s)",
                self._path,
                step.version,
                step.description,
            )

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
            await self._conn.close()

    # ------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        return self._path

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
            async with self._conn.executemany(sql, rows) as cur:
                return ExecResult(cur.rowcount, cur.lastrowid)

    async def execute_script(self, script: str) -> None:
        """Run several statements atomically (see :func:`split_sql`)."""
        async with self.transaction():
            for statement in split_sql(script):
                await self._run(statement)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._access():
            return await self._one(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._access():
            async with self._conn.execute(sql, params) as cur:
                return list(await cur.fetchall())

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
                await self._conn.rollback()
                self._dirty = False
            await self._run("BEGIN IMMEDIATE")
            self._owner = asyncio.current_task()
            try:
                yield self
            except BaseException:
                await self._rollback()
                raise
            else:
                try:
                    await self._conn.commit()
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
                f"database {self._path} was opened without a sealing key; "
                "sealed columns cannot be used"
            )
        return self._sealer

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"database {self._path} is closed")

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
            await self._conn.rollback()
        except asyncio.CancelledError:
            # aiosqlite still runs the queued ROLLBACK; make sure the next
            # transaction starts clean even so.
            self._dirty = True
            raise
        except Exception:
            self._dirty = True
            log.warning("database %s: rollback failed; retrying before next use", self._path)

    async def _run(self, sql: str, params: Params = ()) -> ExecResult:
        async with self._conn.execute(sql, params) as cur:
            return ExecResult(cur.rowcount, cur.lastrowid)

    async def _one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._conn.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row


def _check_context(context: str) -> str:
    # An empty context would seal under the root key, shared by every column.
    if not context:
        raise SealingError("a sealed column needs a context, e.g. 'engagement.pseudonym'")
    return context
