"""The bridge's commands for ``e2ecounsel``: ``up`` and ``bridge``.

Registered through the ``e2ecounsel.commands`` entry point so the core CLI
never imports the bot.
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import replace
from pathlib import Path

from bridge.app import Bridge, BridgeStatus
from e2ecounsel.cli import command, data_dir, data_dir_arg, setup_logging, wait_for_signal
from e2ecounsel.config import BridgeConfig, load_config, write_config
from e2ecounsel.homeserver import EmbeddedHomeserver, HomeserverInfo

BOT_LOCALPART = "counsel"


def register() -> None:
    """Entry point: importing this module registers its commands."""


def _up_args(p: argparse.ArgumentParser) -> None:
    data_dir_arg(p)
    p.add_argument(
        "--port", type=int, default=None, help="homeserver port on 127.0.0.1 (default 8008)"
    )
    p.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="start everything, print the banner, then stop (smoke tests, scripts)",
    )


@command("up", "run the embedded homeserver and the bridge (the default setup)")(_up_args)
async def cmd_up(args: argparse.Namespace) -> int:
    root = data_dir(args)
    root.mkdir(parents=True, exist_ok=True)
    setup_logging("INFO", root / "logs" / "e2ecounsel.log")
    hs = EmbeddedHomeserver(root, port=args.port)
    info = hs.ensure_config()
    config_path = root / "bridge.toml"
    await hs.start()
    bridge: Bridge | None = None
    try:
        config = await _ensure_bridge_config(hs, info, config_path, root)
        bridge = Bridge.from_config(config)
        status = await bridge.start()
        print(banner(info, status, root), flush=True)
        if not args.exit_when_ready:
            await wait_for_signal()
        print("stopping…", flush=True)
    finally:
        if bridge is not None:
            await bridge.stop()
        await hs.stop()
    return 0


async def _ensure_bridge_config(
    hs: EmbeddedHomeserver, info: HomeserverInfo, path: Path, root: Path
) -> BridgeConfig:
    """First run: register the bot and write its config. Later runs: reuse both."""
    if not path.exists():  # noqa: ASYNC240 - one stat at start-up
        password = secrets.token_urlsafe(24)
        user_id = await hs.register_user(BOT_LOCALPART, password, admin=False)
        write_config(
            path,
            BridgeConfig(
                homeserver_url=info.base_url,
                bot_user_id=user_id,
                bot_password=password,
                data_dir=root,
                policies_dir=None,
                supervisors_room=None,
                allowed_servers=(),
                device_name="e2ecounsel bridge",
                log_level="INFO",
            ),
        )
    config = load_config(path)
    if config.homeserver_url != info.base_url:
        # --port moved the homeserver; the bridge follows it.
        config = replace(config, homeserver_url=info.base_url)
        write_config(path, config)
    return config


def banner(info: HomeserverInfo, status: BridgeStatus, root: Path) -> str:
    signed = "yes" if status.cross_signed else "NO"
    return "\n".join(
        [
            "",
            "e2ecounsel is up.",
            f"  homeserver          {info.base_url}  (server name {info.server_name})",
            f"  bot                 {status.user_id}",
            f"  bot device          {status.device_id}  (cross-signed: {signed})",
            f"  registration token  {info.registration_token}",
            f"  data dir            {root}",
            "",
            "Connect:",
            f"  Element:   sign up on {info.base_url} with the registration token,",
            f"             then start an encrypted direct chat with {status.user_id}.",
            f"  Counselor: e2ecounsel tui --homeserver {info.base_url}",
            "  Accounts:  e2ecounsel user add NAME [--admin]",
            "",
            "Press Ctrl-C to stop.",
        ]
    )


def _bridge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="the bridge's TOML config file")


@command("bridge", "run the bridge alone against any homeserver")(_bridge_args)
async def cmd_bridge(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.log_level, config.data_dir / "logs" / "bridge.log")
    bridge = Bridge.from_config(config)
    try:
        status = await bridge.start()
        print(f"bridge online as {status.user_id} (device {status.device_id})", flush=True)
        await wait_for_signal()
    finally:
        await bridge.stop()
    return 0
