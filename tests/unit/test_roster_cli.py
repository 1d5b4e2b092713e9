"""``e2ecounsel counselor …``: the round trip; bad values refused with one line, no change."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bridge.persistence.store import BridgeStore
from bridge.roster import (
    parse_capacity,
    parse_counselor_args,
    parse_mxid,
    parse_reply_windows,
    parse_timezone,
)
from e2ecounsel.cli import main
from e2ecounsel.errors import CommandError
from tests.pgkit import Target

DEWI = "@dewi:example.org"
ADI = "@adi:example.org"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2ECOUNSEL_SEALING_KEY", raising=False)
    monkeypatch.delenv("E2ECOUNSEL_DATA_DIR", raising=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add_args(data: Path, user_id: str = DEWI, **override: str) -> list[str]:
    values = {
        "--name": "Dewi Lestari",
        "--credentials": "M.Psi., Psikolog, licence SIPP 1234",
        "--languages": "id,en",
        "--specialties": "anxiety,career",
        "--capacity": "4",
        "--timezone": "Asia/Jakarta",
        "--reply-windows": "19:00,09:00,13:00",
    }
    values.update(override)
    argv = ["counselor", "add", user_id]
    for key, value in values.items():
        argv += [key, value]
    # No homeserver in these tests; the account check runs against a real one in
    # tests/integration/test_operator_checks.py.
    return argv + ["--no-account-check", "--data-dir", str(data)]


def snapshot(data: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every counselor and audit row, read straight from the file."""
    with sqlite3.connect(data / "bridge.db") as conn:
        counselors = conn.execute("SELECT * FROM counselors ORDER BY user_id").fetchall()
        lines = conn.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    return counselors, lines


def table(out: str) -> dict[str, list[str]]:
    """``counselor list`` output as {id: cells}; cells are split on runs of 2+ spaces."""
    import re

    rows = [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]
    header = rows[0]
    assert header[:2] == ["ID", "NAME"]
    return {r[0]: r for r in rows[1:]}


def test_add_list_on_call_remove_round_trip(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *add_args(data))
    assert (code, err) == (0, "")
    assert out.startswith(f"added {DEWI}: capacity 4")
    assert "09:00,13:00,19:00 (Asia/Jakarta)" in out
    assert run(capsys, *add_args(data, ADI, **{"--name": "Adi", "--languages": "en"}))[0] == 0

    code, out, _ = run(capsys, "counselor", "list", "--data-dir", str(data))
    assert code == 0
    rows = table(out)
    assert rows[DEWI] == [
        DEWI,
        "Dewi Lestari",
        "id,en",
        "anxiety,career",
        "4",
        "0",
        "Asia/Jakarta",
        "09:00,13:00,19:00",
        "no",
    ]
    assert rows[ADI][2] == "en"

    code, out, _ = run(capsys, "counselor", "on-call", DEWI, "on", "--data-dir", str(data))
    assert (code, out.strip()) == (0, f"{DEWI} is now on call")
    assert table(run(capsys, "counselor", "list", "--data-dir", str(data))[1])[DEWI][-1] == "yes"

    code, out, _ = run(capsys, "counselor", "remove", DEWI, "--data-dir", str(data))
    assert code == 0 and out.startswith(f"removed {DEWI}")
    assert DEWI not in table(run(capsys, "counselor", "list", "--data-dir", str(data))[1])
    everyone = table(run(capsys, "counselor", "list", "--all", "--data-dir", str(data))[1])
    assert everyone[DEWI][-2:] == ["no", "removed"] and everyone[ADI][-1] == "active"

    _, lines = snapshot(data)
    assert [line[3] for line in lines] == [
        "counselor.add",
        "counselor.add",
        "counselor.on_call",
        "counselor.remove",
    ]
    assert not any(DEWI in str(cell) for line in lines for cell in line)
    code, out, _ = run(capsys, "audit", "verify", "--data-dir", str(data))
    assert (code, out.strip()) == (0, "audit trail intact: 4 rows")

    # Adding a removed counselor back restores them (and keeps the chain intact).
    code, out, _ = run(capsys, *add_args(data, **{"--capacity": "2"}))
    assert code == 0 and out.startswith(f"added back {DEWI}")
    assert table(run(capsys, "counselor", "list", "--data-dir", str(data))[1])[DEWI][4] == "2"


def test_update_replaces_a_profile(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, *add_args(data))
    before = snapshot(data)
    code, _, err = run(capsys, *add_args(data, **{"--capacity": "9"}))
    assert code == 1 and "already on the roster" in err and len(err.strip().splitlines()) == 1
    assert snapshot(data) == before
    code, out, _ = run(capsys, *add_args(data, **{"--capacity": "9"}), "--update")
    assert code == 0 and out.startswith(f"updated {DEWI}: capacity 9")


def test_config_file_points_at_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[homeserver]\nurl = "http://127.0.0.1:8448"\n'
        '[bot]\nuser_id = "@counsel:localhost"\n'
        '[paths]\ndata_dir = "state"\n',
        encoding="utf-8",
    )
    argv = add_args(tmp_path / "unused")[:-2] + ["--config", str(config)]
    assert run(capsys, *argv)[0] == 0
    assert (tmp_path / "state" / "bridge.db").is_file()
    assert not (tmp_path / "unused").exists()
    code, out, _ = run(capsys, "counselor", "list", "--config", str(config))
    assert code == 0 and DEWI in table(out)


def test_roster_commands_use_the_configured_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], database_target: Target
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[homeserver]\nurl = "http://127.0.0.1:8448"\n'
        '[bot]\nuser_id = "@counsel:localhost"\n'
        f'[paths]\ndata_dir = "state"\ndatabase = "{database_target}"\n',
        encoding="utf-8",
    )
    argv = add_args(tmp_path / "unused")[:-2] + ["--config", str(config)]
    assert run(capsys, *argv)[0] == 0
    assert not (tmp_path / "state" / "bridge.db").exists()
    code, out, _ = run(capsys, "counselor", "list", "--config", str(config))
    assert code == 0 and DEWI in table(out)

    async def stored() -> list[str]:
        store = await BridgeStore.open_data_dir(
            tmp_path / "state", create=False, database=database_target
        )
        try:
            return [c.user_id for c in await store.list_counselors()]
        finally:
            await store.close()

    assert asyncio.run(stored()) == [DEWI]


BAD_VALUES = [
    (
        {"--timezone": "Asia/Jakrta"},
        DEWI,
        "unknown time zone 'Asia/Jakrta'; did you mean 'Asia/Jakarta'?",
    ),
    ({"--timezone": "jakarta"}, DEWI, "did you mean 'Asia/Jakarta'?"),
    ({"--capacity": "0"}, DEWI, "capacity must be at least 1"),
    ({"--capacity": "-3"}, DEWI, "capacity must be at least 1"),
    ({"--capacity": "lots"}, DEWI, "capacity must be a whole number from 1 to 500"),
    ({"--capacity": "501"}, DEWI, "at most 500"),
    ({}, "dewi@example.org", "is not a Matrix user id"),
    ({}, "@Dewi Lestari:example.org", "is not a Matrix user id"),
    ({}, "@dewi", "is not a Matrix user id"),
    ({"--specialties": "anxeity"}, DEWI, "unknown specialty 'anxeity' (did you mean 'anxiety'?)"),
    ({"--specialties": ","}, DEWI, "give at least one specialty"),
    ({"--languages": "fr"}, DEWI, "unknown language 'fr'"),
    ({"--reply-windows": "09:00,25:00"}, DEWI, "reply window '25:00' is not a time"),
    ({"--reply-windows": ""}, DEWI, "give at least one reply window"),
    ({"--name": "   "}, DEWI, "the name must not be empty"),
    ({"--name": "x" * 81}, DEWI, "at most 80"),
    ({"--name": "Dewi\x1b[31m"}, DEWI, "control characters"),
    ({"--credentials": ""}, DEWI, "the credentials must not be empty"),
]


@pytest.mark.parametrize(("override", "user_id", "message"), BAD_VALUES)
def test_bad_values_are_refused_with_one_line(
    data: Path,
    capsys: pytest.CaptureFixture[str],
    override: dict[str, str],
    user_id: str,
    message: str,
) -> None:
    run(capsys, *add_args(data, ADI))
    before = snapshot(data)
    code, out, err = run(capsys, *add_args(data, user_id, **override))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err
    assert snapshot(data) == before


def test_first_bad_add_creates_nothing(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *add_args(data, **{"--capacity": "0"}))
    assert code == 1 and "capacity" in err
    assert not data.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["counselor", "remove", "@ghost:example.org"], "is not on the roster"),
        (["counselor", "remove", "ghost"], "is not a Matrix user id"),
        (["counselor", "on-call", "@ghost:example.org", "on"], "is not on the roster"),
        (["counselor", "on-call", DEWI, "maybe"], "expected 'on' or 'off'"),
    ],
)
def test_bad_roster_changes_are_refused(
    data: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run(capsys, *add_args(data))
    before = snapshot(data)
    code, out, err = run(capsys, *argv, "--data-dir", str(data))
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and message in err
    assert snapshot(data) == before


def test_removed_counselor_cannot_go_on_call(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *add_args(data))
    run(capsys, "counselor", "remove", DEWI, "--data-dir", str(data))
    code, _, err = run(capsys, "counselor", "on-call", DEWI, "on", "--data-dir", str(data))
    assert code == 1 and "is not on the roster" in err


def test_list_without_database(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "counselor", "list", "--data-dir", str(data))
    assert (code, out) == (1, "")
    assert "no bridge database" in err and len(err.strip().splitlines()) == 1
    assert not data.exists()


# ---------------------------------------------------------------------- pure checks


def test_parse_counselor_args_normalises() -> None:
    c = parse_counselor_args(
        " @dewi:example.org:8448 ",
        name=" Dewi ",
        credentials="M.Psi.",
        languages="ID, en, id",
        specialties=["Anxiety", "career"],
        capacity=" 7 ",
        timezone="Asia/Jakarta",
        reply_windows="9:30, 13:00,09:30",
        on_call=True,
        known_languages=("en", "id"),
        known_specialties=("anxiety", "career"),
    )
    assert (c.user_id, c.name, c.languages, c.specialties) == (
        "@dewi:example.org:8448",
        "Dewi",
        ("id", "en"),
        ("anxiety", "career"),
    )
    assert (c.capacity, c.reply_windows, c.on_call, c.active) == (7, ("09:30", "13:00"), True, True)


def test_pure_parsers() -> None:
    assert parse_mxid("@a.b_c=d/e+f-1:[::1]:8008") == "@a.b_c=d/e+f-1:[::1]:8008"
    with pytest.raises(CommandError, match="did you mean '@dewi:example.org'"):
        parse_mxid("dewi:example.org")
    assert parse_capacity(500) == 500
    assert parse_reply_windows(["23:59", "00:00"]) == ("00:00", "23:59")
    assert parse_timezone("UTC") == "UTC"
    with pytest.raises(CommandError, match="did you mean 'Europe/Berlin'"):
        parse_timezone("europe/berlin")
    with pytest.raises(CommandError, match="unknown time zone '../../etc/passwd'"):
        parse_timezone("../../etc/passwd")


def test_supervisor_add_list_remove(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--data-dir", str(data)]
    assert run(capsys, *add_args(data))[0] == 0  # creates the database
    code, out, _ = run(capsys, "supervisor", "list", *where)
    assert code == 0 and out.startswith("no supervisors")
    code, out, _ = run(capsys, "supervisor", "add", ADI, "--name", "Adi Nugroho", *where)
    assert code == 0 and out.startswith(f"added supervisor {ADI}")
    code, out, _ = run(capsys, "supervisor", "add", ADI, "--name", "Adi N.", *where)
    assert code == 0 and "already a supervisor" in out
    code, out, _ = run(capsys, "supervisor", "list", *where)
    assert out.splitlines()[0] == f"{ADI}  Adi N."
    assert "not created yet" in out
    code, _, err = run(capsys, "supervisor", "add", "adi", *where)
    assert code != 0 and "not a Matrix user id" in err
    code, _, err = run(capsys, "supervisor", "remove", DEWI, *where)
    assert code != 0 and "is not a supervisor" in err
    code, out, _ = run(capsys, "supervisor", "remove", ADI, *where)
    assert code == 0 and out.startswith(f"removed supervisor {ADI}")
    assert run(capsys, "supervisor", "list", *where)[1].startswith("no supervisors")
    _, lines = snapshot(data)
    assert [line[3] for line in lines][-3:] == [
        "supervisor.add",
        "supervisor.add",
        "supervisor.remove",
    ]
    assert not any(ADI in str(cell) for line in lines for cell in line)


def test_every_bad_flag_is_reported_at_once(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, *add_args(data, ADI))
    before = snapshot(data)
    bad = {"--capacity": "0", "--timezone": "Asia/Jakrta", "--reply-windows": "25:00"}
    code, out, err = run(capsys, *add_args(data, "dewi", **bad))
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("e2ecounsel: 4 problems: (1) ")
    for part in (
        "'dewi' is not a Matrix user id",
        "capacity must be at least 1",
        "Asia/Jakarta",
        "reply window '25:00'",
    ):
        assert part in lines[0]
    assert snapshot(data) == before


def test_without_a_known_homeserver_the_account_cannot_be_checked(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a for a in add_args(data) if a != "--no-account-check"]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert "cannot check that @dewi:example.org exists" in err and "nothing was changed" in err
    assert not (data / "bridge.db").exists()
