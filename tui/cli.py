"""``e2ecounsel tui``, registered through the ``e2ecounsel.commands`` entry point."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from e2ecounsel.cli import command, setup_logging
from tui.settings import default_config_dir, load_settings


def register() -> None:
    """Entry point: importing this module registers the command."""


def _tui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--homeserver", default=None, help="e.g. https://matrix.example.org")
    p.add_argument("--user", default=None, help="your Matrix ID, e.g. @dewi:example.org")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the device, keys and notes are kept (default: $E2ECOUNSEL_TUI_DIR or "
        "~/.local/share/e2ecounsel-tui)",
    )
    p.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="tui.toml and snippets.toml (default: ~/.config/e2ecounsel)",
    )


@command("tui", "the counselor's terminal app")(_tui_args)
async def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import make_app

    settings = load_settings(
        (args.config_dir or default_config_dir()).expanduser(),
        data_dir=args.data_dir.expanduser() if args.data_dir else None,
        homeserver=args.homeserver,
        user_id=args.user,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The terminal belongs to the app: log to a file only (ids and counts, no text).
    setup_logging("INFO", settings.data_dir / "tui.log")
    for handler in logging.getLogger().handlers:
        if not hasattr(handler, "baseFilename"):
            logging.getLogger().removeHandler(handler)
    await make_app(settings).run_async()
    return 0
