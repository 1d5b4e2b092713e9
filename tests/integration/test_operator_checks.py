"""The operator's checks against a real running `e2ecounsel up`: `counselor add`, `doctor`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest_asyncio

from e2ecounsel.config import load_config, write_config
from e2ecounsel.homeserver import EmbeddedHomeserver, free_port
from tests.integration.test_cli_up import run_cli
from tests.integration.test_homeserver import _call, _login

COUNSELOR_FLAGS = [
    "--name",
    "Dewi",
    "--credentials",
    "M.Psi., Psikolog",
    "--languages",
    "id,en",
    "--specialties",
    "anxiety",
    "--capacity",
    "3",
    "--timezone",
    "Asia/Jakarta",
    "--reply-windows",
    "09:00,19:00",
]


class Install:
    """A data dir with `e2ecounsel up` running on it, as an operator has it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, port: int) -> str:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("E2ECOUNSEL_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "e2ecounsel",
            "up",
            "--data-dir",
            str(self.root),
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**environ, **self.env},
        )
        assert self.proc.stdout is not None
        banner = []
        async with asyncio.timeout(180):
            while not banner or "Press Ctrl-C" not in banner[-1]:
                line = await self.proc.stdout.readline()
                assert line, "up exited before its banner:\n" + "".join(banner)
                banner.append(line.decode())
        return "".join(banner)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            assert await asyncio.wait_for(self.proc.wait(), 60) == 0

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        return await run_cli(
            *args, "--data-dir", str(self.root), env=self.env if env is None else env
        )


@pytest_asyncio.fixture(loop_scope="session")
async def install(tmp_path: Path) -> AsyncIterator[Install]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    setup = Install(tmp_path / "data", {"E2ECOUNSEL_SEALING_KEY_FILE": str(keys / "sealing.key")})
    port = free_port()
    code, _, err = await run_cli(
        "up",
        "--data-dir",
        str(setup.root),
        "--port",
        str(port),
        "--exit-when-ready",
        env=setup.env,
    )
    assert code == 0, err
    code, _, err = await setup.cli("user", "add", "dewi", "--password", "dewi-password-1")
    assert code == 0, err
    await setup.start(port)
    try:
        yield setup
    finally:
        await setup.stop()


def findings(out: str) -> dict[str, list[str]]:
    """doctor's lines by check name: {check: [LEVEL detail, ...]}."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        level, _, rest = line.partition(" ")
        if level in ("OK", "WARN", "FAIL"):
            check, _, detail = rest.strip().partition("  ")
            found.setdefault(check.strip(), []).append(f"{level} {detail.strip()}")
    return found


async def test_counselor_add_checks_the_account(install: Install) -> None:
    bad = {
        "@nobody:localhost": "has no account on",
        "@dewi:elsewhere.example": "does not federate",
    }
    for user_id, why in bad.items():
        code, out, err = await install.cli("counselor", "add", user_id, *COUNSELOR_FLAGS)
        assert code == 1 and why in err and "nothing was changed" in err, err
    code, out, err = await install.cli("counselor", "list")
    assert "roster is empty" in out

    code, out, err = await install.cli("counselor", "add", "@dewi:localhost", *COUNSELOR_FLAGS)
    assert code == 0, err
    assert out.startswith("added @dewi:localhost")


async def test_doctor_names_each_problem_and_passes_once_fixed(install: Install) -> None:
    code, out, err = await install.cli("doctor")
    assert code == 1, out + err
    found = findings(out)
    assert found["homeserver"] == [
        f"OK answers on {load_config(install.root / 'bridge.toml').homeserver_url}"
    ]
    assert found["admin API"][0].startswith("OK only on the loopback listener http://127.0.0.1:")
    assert found["sealing key"][0].startswith("OK")
    assert found["bot password"][0].startswith("OK")
    assert found["registration"][0].startswith("OK")
    assert found["password policy"] == ["OK at least 10 characters"]
    assert found["registration tokens"][0].startswith("OK 1 valid")
    assert found["bot cross-signing"][0].startswith("OK @counsel:localhost: 1 device(s)")
    assert found["supervisors"] == [
        "FAIL none on the list: crisis pages and SLA escalations reach no supervisor"
    ]
    assert "supervisors' room" not in found
    assert found["roster"][0].startswith("WARN no counselor")
    assert "fix: e2ecounsel supervisor add MXID" in out

    # The key beside the database, an unbounded token, a ghost on the roster: each is named.
    code, out, _ = await install.cli("doctor", env={})
    assert findings(out)["sealing key"][0].startswith("WARN no key in the data dir")
    in_data = install.root / "sealing.key"
    shutil.copy2(install.env["E2ECOUNSEL_SEALING_KEY_FILE"], in_data)
    code, out, _ = await install.cli("doctor", env={})
    in_data.unlink()
    assert code == 1 and findings(out)["sealing key"][0].startswith(
        f"FAIL {in_data} sits beside the database"
    )
    bystander = EmbeddedHomeserver(install.root)
    unbounded = await bystander.admin_call(
        "POST",
        "/_synapse/admin/v1/registration_tokens/new",
        json_body={"uses_allowed": None, "expiry_time": None},
        what="make an unbounded token",
    )
    code, out, err = await install.cli(
        "counselor", "add", "@ghost:localhost", *COUNSELOR_FLAGS, "--no-account-check"
    )
    assert code == 0, err
    code, out, _ = await install.cli("doctor")
    found = findings(out)
    assert found["registration tokens"][0].startswith("FAIL 1 token(s) without a use limit")
    assert unbounded["token"] not in out
    assert found["roster"] == [
        "FAIL @ghost:localhost has no account here: clients matched to them get no answer"
    ]

    # The operator follows the advice.
    # After "--": a token may start with "-" (Synapse's alphabet has it), which would
    # otherwise read as an option.
    revoke = ("token", "revoke", "--data-dir", str(install.root), "--", unbounded["token"])
    assert (await run_cli(*revoke, env=install.env))[0] == 0
    assert (await install.cli("counselor", "remove", "@ghost:localhost"))[0] == 0
    assert (await install.cli("counselor", "add", "@dewi:localhost", *COUNSELOR_FLAGS))[0] == 0
    status, body = await _login(bystander.info.base_url, "@dewi:localhost", "dewi-password-1")
    assert status == 200, body
    assert (await install.cli("supervisor", "add", "@dewi:localhost"))[0] == 0

    # The running bridge makes the supervisors' room and invites her; nothing is edited by hand.
    deadline = time.monotonic() + 60
    while True:
        code, out, err = await install.cli("doctor")
        room_lines = findings(out).get("supervisors' room", [])
        if len(room_lines) > 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert code == 0, out + err
    found = findings(out)
    assert found["supervisors"] == ["OK 1 on the list"]
    room = found["supervisors' room"][0].removeprefix("OK ")
    assert room.startswith("!"), found
    assert found["supervisors' room"][1:] == [
        "OK the bot and 0 of 1 supervisor(s) are in it",
        "WARN 1 supervisor(s) have not joined yet",
    ]
    assert found["on call"] == [
        "WARN no counselor on call: crisis pages reach the supervisors only"
    ]

    # A configured room that is not there is named as such.
    path = install.root / "bridge.toml"
    kept = path.read_text()
    write_config(path, replace(load_config(path), supervisors_room="!nowhere:localhost"))
    code, out, err = await install.cli("doctor")
    path.write_text(kept)
    assert code == 1, out + err
    assert findings(out)["supervisors' room"] == [
        "OK !nowhere:localhost",
        "FAIL !nowhere:localhost does not exist on localhost",
    ]

    status, joined = await _call(
        "POST",
        f"{bystander.info.base_url}/_matrix/client/v3/join/{quote(room)}",
        json={},
        token=body["access_token"],
    )
    assert status == 200, joined
    assert (await install.cli("counselor", "on-call", "@dewi:localhost", "on"))[0] == 0
    code, out, err = await install.cli("doctor")
    assert code == 0, out + err
    found = findings(out)
    assert found["supervisors' room"] == [
        f"OK {room}",
        "OK the bot and 1 of 1 supervisor(s) are in it",
    ]
    assert found["roster"] == ["OK 1 counselor(s), every account active"]
    assert found["on call"] == ["OK 1 counselor(s)"]
    assert "WARN" not in out
    assert out.rstrip().endswith("no problem found")


def banner_line(banner: str, name: str) -> str:
    match = re.search(rf"^  {name}\s+(.+)$", banner, re.MULTILINE)
    assert match, f"no {name!r} in banner:\n{banner}"
    return match.group(1)


async def test_up_says_whether_escalation_is_possible(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    setup = Install(tmp_path / "data", {"E2ECOUNSEL_SEALING_KEY_FILE": str(keys / "sealing.key")})
    port = free_port()
    up = ("up", "--data-dir", str(setup.root), "--port", str(port), "--exit-when-ready")
    code, out, err = await run_cli(*up, env=setup.env)
    assert code == 0, err
    assert banner_line(out, "supervisors") == "no supervisors yet: `e2ecounsel supervisor add MXID`"
    assert banner_line(out, "on call") == "nobody: `e2ecounsel counselor on-call MXID on`"
    assert banner_line(out, "escalation").startswith("NOT possible yet")

    for name in ("sari", "dewi"):
        code, _, err = await setup.cli("user", "add", name, "--password", f"{name}-password-1")
        assert code == 0, err
    assert (await setup.cli("supervisor", "add", "@sari:localhost"))[0] == 0
    code, _, err = await setup.cli(
        "counselor", "add", "@dewi:localhost", *COUNSELOR_FLAGS, "--on-call"
    )
    assert code == 0, err

    try:
        out = await setup.start(port)
        assert banner_line(out, "supervisors").startswith(
            "1 on the list; their room is not created yet"
        )
        assert banner_line(out, "on call") == "1 counselor(s)"
        assert banner_line(out, "escalation").startswith("NOT possible yet")
        deadline = time.monotonic() + 60
        while True:
            code, listed, err = await setup.cli("supervisor", "list")
            assert code == 0, err
            if "supervisors' room: !" in listed or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    finally:
        await setup.stop()
    room = listed.rsplit("supervisors' room: ", 1)[1].strip()
    assert room.startswith("!"), listed

    code, out, err = await run_cli(*up, env=setup.env)
    assert code == 0, err
    assert banner_line(out, "supervisors") == f"1 on the list; their room {room}"
    assert banner_line(out, "escalation") == (
        "possible: crisis pages and SLA escalations reach the supervisors"
    )
