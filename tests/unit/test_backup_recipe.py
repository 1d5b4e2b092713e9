"""The backup commands of docs/production.md, run on the bridge's real store: restored, it opens.

A dump holds sealed columns sealed: it is no use without the sealing key, and the key's backup
is kept apart from it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from bridge.persistence.store import BridgeStore, ClientRecord
from e2ecounsel.errors import SealingError
from e2ecounsel.sealing import Sealer
from tests.pgkit import PgCluster, _bin_dir

KEY = bytes(range(32))
CLIENT = "@melati:counsel.test"
PROFILE = {"pseudonym": "Melati Putih"}


async def fill(target: str | Path) -> None:
    store = await BridgeStore.open(target, Sealer(KEY))
    try:
        await store.save_client(ClientRecord(user_id=CLIENT, language="id", profile=PROFILE))
        await store.audit(CLIENT, "consent.given")
    finally:
        await store.close()


async def check_restored(target: str | Path) -> None:
    store = await BridgeStore.open(target, Sealer(KEY))
    try:
        client = await store.get_client(CLIENT)
        assert client is not None and client.profile == PROFILE
        assert (await store.verify_audit()).ok
    finally:
        await store.close()
    stranger = await BridgeStore.open(target, Sealer(bytes(32)))
    try:
        with pytest.raises(SealingError):
            await stranger.get_client(CLIENT)
    finally:
        await stranger.close()


async def run(*argv: str) -> str:
    """A command's stdout; it must succeed."""
    done = await asyncio.to_thread(
        subprocess.run, argv, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def _database(cluster: PgCluster, name: str) -> str:
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.admin_url.rsplit("/", 1)[0] + f"/{name}"


async def test_pg_dump_and_restore(pg_cluster: PgCluster, tmp_path: Path) -> None:
    bin_dir = _bin_dir()
    assert bin_dir is not None
    source, restored = _database(pg_cluster, "bridge_src"), _database(pg_cluster, "bridge_new")
    await fill(source)
    dump = tmp_path / "bridge.dump"
    await run(str(bin_dir / "pg_dump"), "-Fc", "-d", source, "-f", str(dump))
    await run(str(bin_dir / "pg_restore"), "-d", restored, str(dump))
    await check_restored(restored)
    plain = await run(str(bin_dir / "pg_dump"), "-d", source)
    assert CLIENT in plain and "Melati" not in plain


async def test_sqlite_backup_while_the_store_is_open(tmp_path: Path) -> None:
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the sqlite3 command is not installed (CI installs it)")
        pytest.skip("the sqlite3 command is not installed; apt-get install sqlite3")
    database, backup = tmp_path / "bridge.db", tmp_path / "bridge-backup.db"
    await fill(database)
    store = await BridgeStore.open(database, Sealer(KEY))  # the bridge keeps running
    try:
        await run(sqlite3, str(database), f".backup {backup}")
    finally:
        await store.close()
    await check_restored(backup)
    assert b"Melati" not in backup.read_bytes()
