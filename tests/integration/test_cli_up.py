"""`e2ecounsel up` as an operator runs it: a real process, a real Synapse, twice."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import sys
import tomllib
from pathlib import Path

import yaml

from e2ecounsel.config import BridgeConfig, load_config, write_config
from e2ecounsel.homeserver import free_port


async def run_cli(
    *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("E2ECOUNSEL_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "e2ecounsel",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**environ, **(env or {})},
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
    assert "10 sign-ups" in out and "shown once" in out
    bot = field(out, "bot")
    assert bot.startswith("@counsel:")

    # The recovery key went to a 0600 file, named in the banner, never to the terminal.
    recovery = data / "bot-recovery-key.txt"
    assert str(recovery) in out
    assert stat.S_IMODE(recovery.stat().st_mode) == 0o600
    key = recovery.read_text().splitlines()[-1]
    assert len(key.replace(" ", "")) > 40
    assert key not in out + err
    assert key not in (data / "logs" / "e2ecounsel.log").read_text()
    # Signed in and cross-signed: the bot's password is gone from bridge.toml.
    assert "password" not in tomllib.loads((data / "bridge.toml").read_text())["bot"]
    # The sealing key sits beside the database here: `up` says so.
    assert "WARNING" in out and "sealing.key sits beside the database" in out

    code, out2, err2 = await run_cli(
        "up", "--data-dir", str(data), "--port", str(port), "--exit-when-ready"
    )
    assert code == 0, err2
    assert field(out2, "bot device") == device, "a second run must not create a new device"
    assert token not in out2
    assert not re.search(r"^\s*registration token\s", out2, re.MULTILINE)
    assert "e2ecounsel token new --uses N --expires 7d" in out2
    assert "recovery key" not in out2
    assert "(cross-signed: yes)" in out2
    assert "Traceback" not in err + err2

    # The operator moves the key out of the data dir: no warning, everything still opens.
    outside = tmp_path / "keys" / "sealing.key"
    outside.parent.mkdir(mode=0o700)
    (data / "sealing.key").rename(outside)
    code, out3, err3 = await run_cli(
        "up",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--exit-when-ready",
        "--behind-proxy",
        env={"E2ECOUNSEL_SEALING_KEY_FILE": str(outside)},
    )
    assert code == 0, err3
    assert field(out3, "bot device") == device
    assert "WARNING" not in out3 and "(cross-signed: yes)" in out3
    homeserver_yaml = (data / "synapse" / "homeserver.yaml").read_text()
    assert yaml.safe_load(homeserver_yaml)["listeners"][0]["x_forwarded"] is True


async def test_token_commands(tmp_path: Path):
    data = tmp_path / "data"
    code, _, err = await run_cli(
        "up", "--data-dir", str(data), "--port", str(free_port()), "--exit-when-ready"
    )
    assert code == 0, err
    code, out, err = await run_cli(
        "token", "new", "--uses", "3", "--expires", "2d", "--data-dir", str(data)
    )
    assert code == 0, err
    token = out.strip()
    assert len(token) >= 24 and "3 sign-up(s)" in err
    code, out, err = await run_cli("token", "list", "--data-dir", str(data))
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith(token))
    assert row.split()[1:3] == ["0", "3"] and "valid" in row

    # Every bad flag at once, nothing created.
    code, out, err = await run_cli(
        "token", "new", "--uses", "0", "--expires", "forever", "--data-dir", str(data)
    )
    assert code == 1 and "--uses" in err and "--expires" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1

    # A token may start with "-" (Synapse's alphabet has it): it goes after "--".
    code, out, err = await run_cli("token", "revoke", "--data-dir", str(data), "--", token)
    assert code == 0, err
    code, out, err = await run_cli("token", "list", "--all", "--data-dir", str(data))
    assert token not in out
    code, out, err = await run_cli("token", "revoke", "--data-dir", str(data), "--", token)
    assert code == 1 and "no such registration token" in err


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
    code, out, err = await run_cli(
        "user", "add", "adi", "--password", "short", "--data-dir", str(data)
    )
    assert code == 1 and "at least 10 characters" in err and "created" not in out
    code, out, err = await run_cli("user", "add", "dewi", "--data-dir", str(data))
    assert code == 1 and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


async def test_bridge_alone_drops_the_bot_password_after_the_first_sign_in(
    homeserver, user_factory, tmp_path: Path
):
    """The production shape: an operator's bridge.toml holds the password once, not for good."""
    user_id, password = await user_factory("counsel")
    config_path = tmp_path / "bridge.toml"
    write_config(
        config_path,
        BridgeConfig(
            homeserver_url=homeserver.info.base_url,
            bot_user_id=user_id,
            bot_password=password,
            data_dir=tmp_path / "data",
            policies_dir=None,
            supervisors_room=None,
            allowed_servers=(),
            device_name="e2ecounsel bridge",
            log_level="INFO",
        ),
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("E2ECOUNSEL_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "e2ecounsel",
        "bridge",
        "--config",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=environ,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line.decode().startswith(f"bridge online as {user_id}")
        assert load_config(config_path).bot_password is None
        assert password not in config_path.read_text()
    finally:
        proc.terminate()
        await proc.wait()
