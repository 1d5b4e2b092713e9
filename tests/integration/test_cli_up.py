"""`e2ecounsel up` as an operator runs it: a real process, a real Synapse, twice."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

from e2ecounsel.homeserver import free_port


async def run_cli(*args: str, timeout: float = 180) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "e2ecounsel",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def field(banner: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+(\S+)", banner, re.MULTILINE)
    assert match, f"no {name!r} in banner:\n{banner}"
    return match.group(1)


async def test_up_starts_healthy_and_reuses_everything(tmp_path: Path):
    data = tmp_path / "data"
    port = free_port()
    code, out, err = await run_cli(
        "up", "--data-dir", str(data), "--port", str(port), "--exit-when-ready"
    )
    assert code == 0, err
    assert f"http://127.0.0.1:{port}" in out
    assert "(cross-signed: yes)" in out
    device = field(out, "bot device")
    token = field(out, "registration token")
    bot = field(out, "bot")
    assert bot.startswith("@counsel:")

    code, out2, err2 = await run_cli(
        "up", "--data-dir", str(data), "--port", str(port), "--exit-when-ready"
    )
    assert code == 0, err2
    assert field(out2, "bot device") == device, "a second run must not create a new device"
    assert field(out2, "registration token") == token
    assert "(cross-signed: yes)" in out2
    assert "Traceback" not in err + err2


async def test_up_on_a_busy_port_says_so_in_one_line(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await run_cli(
            "up",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            str(port),
            "--exit-when-ready",
            timeout=60,
        )
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(port) in lines[0] and "--port" in lines[0]
    assert "Traceback" not in err


async def test_policy_check_and_user_add(tmp_path: Path):
    code, out, err = await run_cli("policy", "check")
    assert code == 0 and "policies OK" in out, err
    data = tmp_path / "hs"
    code, out, err = await run_cli(
        "up", "--data-dir", str(data), "--port", str(free_port()), "--exit-when-ready"
    )
    assert code == 0, err
    # The homeserver is stopped: `user add` starts it for the moment, on the saved port.
    code, out, err = await run_cli(
        "user", "add", "dewi", "--password", "pw-dewi-123", "--data-dir", str(data)
    )
    assert code == 0, err
    assert "created @dewi:" in out
    code, out, err = await run_cli("user", "add", "dewi", "--data-dir", str(data))
    assert code == 1 and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
