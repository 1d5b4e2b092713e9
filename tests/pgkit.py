"""A throw-away PostgreSQL cluster for the tests, from the distribution's packages.

``pg_cluster`` (session) runs ``initdb`` and ``pg_ctl`` in a temporary folder:
a unix socket there and a free TCP port on 127.0.0.1, trust authentication,
no fsync. As root the cluster runs as the ``postgres`` user (``initdb`` refuses
root). Without the binaries the PostgreSQL cases are skipped, except under
``CI=true`` where they fail: CI installs the ``postgresql`` package.

``database_target`` is parametrised over both back-ends and gives what
:meth:`Database.open` takes: a fresh SQLite path, or the URL of a new, empty
PostgreSQL schema of its own. ``bridge_database`` is for the bridge's journeys:
``None`` (the data dir's SQLite file), or a PostgreSQL URL when
``E2ECOUNSEL_TEST_DATABASE=postgresql``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import psycopg
import pytest

BACKENDS = ("sqlite", "postgresql")
BACKEND_ENV = "E2ECOUNSEL_TEST_DATABASE"


def _bin_dir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgCluster:
    """A running cluster; :meth:`new_database` makes an empty database and returns its URL."""

    root: Path
    port: int
    user: str = "e2ecounsel"
    _names: Iterator[int] = field(default_factory=count)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """An empty schema of database ``test``, as the URL of a search path that holds only it.

        A schema is made in milliseconds, a database in half a second.
        """
        name = f"test_{next(self._names)}"
        url = f"postgresql://{self.user}@127.0.0.1:{self.port}/test"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{url}?options=-csearch_path%3D{name}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL tests cannot run: {reason} (CI installs the postgresql package)")
    pytest.skip(f"PostgreSQL tests skipped: {reason}; apt-get install postgresql")


def _run(argv: list[str], root: Path) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log = root / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        pytest.fail(f"PostgreSQL test cluster: {' '.join(argv)} failed:\n{done.stderr}{tail}")


def start_cluster() -> tuple[PgCluster, list[str], Path]:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        _unavailable("initdb/pg_ctl not found")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="e2ecounsel-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no postgres user")
        os.chown(root, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    cluster = PgCluster(root=root, port=_free_port())
    data = root / "data"
    _run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", cluster.user]
        + ["-E", "UTF8", "--locale=C", "--no-sync"],
        root,
    )
    options = (
        f"-k {root} -h 127.0.0.1 -p {cluster.port} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
    _run([*ctl, "-o", options, "-l", str(root / "log"), "-w", "start"], root)
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE test")
    return cluster, ctl, root


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    started = time.monotonic()
    cluster, ctl, root = start_cluster()
    print(f"PostgreSQL test cluster up in {time.monotonic() - started:.1f}s on port {cluster.port}")
    try:
        yield cluster
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


Target = str | Path


@pytest.fixture(params=BACKENDS)
def database_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Target]:
    """Makes new, empty databases on one back-end: SQLite paths or PostgreSQL URLs."""
    if request.param == "sqlite":
        names = count()
        return lambda: tmp_path / "data" / f"test{next(names)}.db"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database


@pytest.fixture
def database_target(database_factory: Callable[[], Target]) -> Target:
    """A new, empty database on each back-end."""
    return database_factory()


@pytest.fixture
def bridge_database(request: pytest.FixtureRequest) -> str | None:
    """The store of a journey's bridge: the SQLite default, or PostgreSQL when asked by env."""
    backend = os.environ.get(BACKEND_ENV, "sqlite")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}")
    if backend == "sqlite":
        return None
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()
