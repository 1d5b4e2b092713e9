"""Logs an operator keeps: no SQL parameters at DEBUG, no registration token in Synapse's log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from e2ecounsel.cli import setup_logging
from e2ecounsel.store import Database, MigrationRegistry
from e2ecounsel.synapse_side import RedactRegistrationTokens, redact


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_debug_log_carries_no_sql_parameters(tmp_path: Path, restore_logging: object) -> None:
    log_file = tmp_path / "logs" / "bridge.log"
    setup_logging("DEBUG", log_file)
    logging.getLogger("bridge.test").debug("debug lines still arrive")
    registry = MigrationRegistry()
    registry.add_sql("t", "CREATE TABLE t (user_id TEXT)")
    db = await Database.open(tmp_path / "t.db", registry)
    try:
        async with db.transaction():
            await db.execute("INSERT INTO t VALUES (?)", ("@client-secret-id:example.org",))
        await db.fetchall(
            "SELECT user_id FROM t WHERE user_id = ?", ("@client-secret-id:example.org",)
        )
    finally:
        await db.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "debug lines still arrive" in text
    assert "@client-secret-id:example.org" not in text
    assert "INSERT INTO" not in text


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            '127.0.0.1 - 8008 - {None} Processed request: 0.002sec 59B 200 "GET '
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=Zq9-x_Y~.a "
            'HTTP/1.1" "Element"',
            "Zq9-x_Y~.a",
        ),
        (
            "Auth completed with creds: {'m.login.registration_token': 'Zq9-x_Y~.a', "
            "'m.login.dummy': True}. Client dict has keys: ['username']",
            "Zq9-x_Y~.a",
        ),
        ('{"token": "Zq9-x_Y~.a", "uses_allowed": 1}', "Zq9-x_Y~.a"),
    ],
)
def test_registration_tokens_are_redacted(line: str, secret: str) -> None:
    assert secret not in redact(line) and "<redacted>" in redact(line)
    record = logging.LogRecord("synapse", logging.INFO, __file__, 1, "%s", (line,), None)
    assert RedactRegistrationTokens().filter(record)
    assert secret not in record.getMessage()


def test_other_lines_are_left_alone() -> None:
    line = "Auth completed with creds: {'m.login.password': '@dewi:localhost'}"
    assert redact(line) == line
