"""The ``e2ecounsel`` command.

Subcommands are registered in one table (:data:`COMMANDS`); each gets its own
argparse sub-parser and an async runner. Every :class:`E2ECounselError` is
printed as one line, never as a traceback.

The core knows nothing of the bot or the terminal app (import-linter enforces
it): ``bridge`` and ``tui`` add their own commands through the
``e2ecounsel.commands`` entry-point group, each a function that registers
commands with :func:`command`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import logging.handlers
import os
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2ecounsel import __version__
from e2ecounsel.errors import E2ECounselError

logger = logging.getLogger(__name__)

Runner = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Runner


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str
) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[Runner], Runner]]:
    """Register ``e2ecounsel NAME``: decorate the argument setup, then the runner."""

    def with_args(
        configure: Callable[[argparse.ArgumentParser], None],
    ) -> Callable[[Runner], Runner]:
        def with_runner(run: Runner) -> Runner:
            COMMANDS[name] = Command(name, help, configure, run)
            return run

        return with_runner

    return with_args


def default_data_dir() -> Path:
    env = os.environ.get("E2ECOUNSEL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "e2ecounsel"


def data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the homeserver, bot and keys live (default: $E2ECOUNSEL_DATA_DIR or "
        "~/.local/share/e2ecounsel)",
    )


def data_dir(args: argparse.Namespace) -> Path:
    return (args.data_dir or default_data_dir()).expanduser().resolve()


def setup_logging(level: str, log_file: Path | None) -> None:
    """Log to stderr and, when given, to a rotating file (0600).

    Log lines carry ids and counts only; message text never reaches them.
    """
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    root.addHandler(err)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3)
        fh.setFormatter(fmt)
        root.addHandler(fh)
        os.chmod(log_file, 0o600)
    # nio's own loggers are chatty at INFO and can name rooms; keep them quiet.
    for noisy in ("nio", "peewee", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------------- user add


def _user_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("username", help="the local part, e.g. 'dewi' for @dewi:localhost")
    p.add_argument("--password", default=None, help="default: generate one and print it")
    p.add_argument("--admin", action="store_true", help="make the account a homeserver admin")
    data_dir_arg(p)


@command("user add", "add an account on the embedded homeserver")(_user_add_args)
async def cmd_user_add(args: argparse.Namespace) -> int:
    from e2ecounsel.homeserver import EmbeddedHomeserver

    hs = EmbeddedHomeserver(data_dir(args))
    info = hs.ensure_config()
    password = args.password or secrets.token_urlsafe(16)
    started_here = False
    if not await hs.is_healthy():
        await hs.start()
        started_here = True
    try:
        user_id = await hs.register_user(args.username, password, admin=args.admin)
    finally:
        if started_here:
            await hs.stop()
    print(f"created {user_id} on {info.base_url}")
    if not args.password:
        print(f"password: {password}")
    return 0


# ---------------------------------------------------------------------- policy check


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", nargs="?", type=Path, default=None, help="policies folder (default: packaged)"
    )


@command("policy check", "validate a policies folder and run its crisis corpus")(_policy_args)
async def cmd_policy_check(args: argparse.Namespace) -> int:
    from datetime import date

    from e2ecounsel.domain.crisis_corpus import summary_lines
    from e2ecounsel.policy import (
        CRISIS_CORPUS,
        CRISIS_HELDOUT,
        check_policy,
        crisis_corpus_report,
        load_policy,
    )

    warnings = check_policy(args.dir)
    for w in warnings:
        print(f"warning: {w}")
    policy = load_policy(args.dir)
    checked = policy.crisis.last_checked
    if checked is not None:
        age = (date.today() - checked).days
        stale = " - more than a year ago, check them again" if age > 365 else ""
        print(f"crisis resources last checked on {checked.isoformat()}{stale}")
    for rel in (CRISIS_CORPUS, CRISIS_HELDOUT):
        report = crisis_corpus_report(policy, rel, [])
        if report is not None:
            print(f"{rel}:")
            for line in summary_lines(report):
                print(f"  {line}")
    print("policies OK" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return 0


def _crisis_test_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="lines label<TAB>lang<TAB>text (1 = at risk)")
    p.add_argument(
        "--policies", type=Path, default=None, help="policies folder (default: packaged)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per judged line")


@command("policy crisis-test", "run the crisis triage over labelled messages")(_crisis_test_args)
async def cmd_policy_crisis_test(args: argparse.Namespace) -> int:
    import json

    from e2ecounsel.domain.crisis_corpus import CorpusError, evaluate, parse_corpus, summary_lines
    from e2ecounsel.errors import PolicyError
    from e2ecounsel.policy import load_policy

    policy = load_policy(args.policies)
    try:
        samples = parse_corpus(args.file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot be read ({exc.__class__.__name__})", file=args.file) from None
    except CorpusError as exc:
        raise PolicyError(str(exc), file=args.file) from None
    report = evaluate(policy.crisis.detector(), samples)
    if args.json:
        for judged in report.judged:
            s = judged.sample
            fields = {"label": s.label, "lang": s.lang, "text": s.text}
            print(json.dumps({**fields, "decision": judged.outcome.value}, ensure_ascii=False))
        return 0
    for title, rows in (("missed", report.misses), ("full protocol", report.false_protocols)):
        for judged in rows:
            s = judged.sample
            why = f" [{judged.reason}]" if judged.reason else ""
            print(f"{title}: line {s.line} ({s.lang}, {judged.outcome.value}{why}): {s.text}")
    for line in summary_lines(report):
        print(line)
    return 0


# ---------------------------------------------------------------------- main


def load_plugins() -> None:
    """Let installed parts (the bridge, the TUI) register their commands."""
    for ep in importlib.metadata.entry_points(group="e2ecounsel.commands"):
        register = ep.load()
        register()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ecounsel", description="End-to-end encrypted counseling on Matrix."
    )
    parser.add_argument("--version", action="version", version=f"e2ecounsel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, Any] = {}
    for cmd in sorted(COMMANDS.values(), key=lambda c: c.name):
        words = cmd.name.split()
        target = sub
        if len(words) == 2:
            # "user add", "counselor list": a group parser with its own sub-commands.
            group = groups.get(words[0])
            if group is None:
                gp = sub.add_parser(words[0], help=f"{words[0]} commands")
                group = groups[words[0]] = gp.add_subparsers(dest="subcommand", metavar="ACTION")
                gp.set_defaults(_group=gp)
            target = group
        sp = target.add_parser(words[-1], help=cmd.help, description=cmd.help)
        cmd.configure(sp)
        sp.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    load_plugins()
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    run: Runner | None = getattr(args, "_run", None)
    if run is None:
        (getattr(args, "_group", None) or parser).print_help()
        return 2
    try:
        return asyncio.run(run(args))
    except E2ECounselError as exc:
        print(f"e2ecounsel: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the package so plugins register into this module, not __main__.
    from e2ecounsel.cli import main as _main

    raise SystemExit(_main())
