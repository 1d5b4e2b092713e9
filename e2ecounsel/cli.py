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
import contextlib
import importlib.metadata
import logging
import logging.handlers
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2ecounsel import __version__
from e2ecounsel.errors import CommandError, E2ECounselError

if TYPE_CHECKING:
    from e2ecounsel.homeserver import EmbeddedHomeserver

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


def check_all(checks: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every check and return the values, or one CommandError naming every problem.

    An operator who typed three bad flags learns of all three at once, not one per attempt.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, check in checks.items():
        try:
            values[name] = check()
        except CommandError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise CommandError(problems[0])
    if problems:
        raise CommandError(
            f"{len(problems)} problems: "
            + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        )
    return values


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


@contextlib.asynccontextmanager
async def embedded_homeserver(root: Path) -> AsyncIterator[EmbeddedHomeserver]:
    """The embedded homeserver of ``root``, answering: the running one, or started for now."""
    from e2ecounsel.homeserver import EmbeddedHomeserver

    hs = EmbeddedHomeserver(root)
    hs.ensure_config()
    started_here = False
    if not await hs.is_healthy():
        await hs.start()
        started_here = True
    try:
        yield hs
    finally:
        if started_here:
            await hs.stop()


async def account_problem(root: Path, homeserver_url: str | None, user_id: str) -> str | None:
    """Why ``user_id`` cannot be given work (no account, deactivated, …), or None if it can.

    With the embedded homeserver of ``root`` the admin API answers exactly (its profile
    look-ups are limited to people who share a room, so they cannot tell a missing account from
    a stranger). Elsewhere a public profile look-up on ``homeserver_url`` answers; when that
    server does not say, the problem says so instead of guessing.
    """
    from e2ecounsel.homeserver import lookup_profile

    if (root / "synapse" / "homeserver.yaml").is_file():
        async with embedded_homeserver(root) as hs:
            server = hs.info.server_name
            if user_id.partition(":")[2] != server:
                return (
                    f"{user_id} is not an account of this homeserver ({server}), which does "
                    "not federate: they could never join a session room"
                )
            state = await hs.account_state(user_id)
        if state is None:
            return (
                f"{user_id} has no account on {hs.info.base_url}; check the spelling, or "
                "create it first: e2ecounsel user add NAME"
            )
        if state == "deactivated":
            return f"{user_id} is deactivated on {hs.info.base_url}"
        return None
    if homeserver_url is None:
        return (
            f"cannot check that {user_id} exists: no homeserver is known for {root} "
            "(run `e2ecounsel up` first, or give --config)"
        )
    found = await lookup_profile(homeserver_url, user_id)
    if found is None:
        return f"cannot check that {user_id} exists: {homeserver_url} does not say"
    if not found:
        return f"{user_id} has no account (no profile on {homeserver_url}); check the spelling"
    return None


@command("user add", "add an account on the embedded homeserver")(_user_add_args)
async def cmd_user_add(args: argparse.Namespace) -> int:
    from e2ecounsel.homeserver import MIN_PASSWORD_LENGTH

    if args.password is not None and len(args.password) < MIN_PASSWORD_LENGTH:
        # The shared-secret registration skips Synapse's password policy; apply it here.
        raise CommandError(
            f"--password: at least {MIN_PASSWORD_LENGTH} characters, or leave it out to get a "
            "generated one"
        )
    password = args.password or secrets.token_urlsafe(16)
    async with embedded_homeserver(data_dir(args)) as hs:
        user_id = await hs.register_user(args.username, password, admin=args.admin)
    print(f"created {user_id} on {hs.info.base_url}")
    if not args.password:
        print(f"password: {password}")
    return 0


# ---------------------------------------------------------------------- token


_DURATION_RE = re.compile(r"(\d{1,4})\s*([mhdw])")
_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TOKEN_USES = 10_000
MAX_TOKEN_DAYS = 366


def parse_duration(text: str) -> int:
    """Seconds in ``30m``, ``12h``, ``7d`` or ``2w``, or CommandError."""
    m = _DURATION_RE.fullmatch(text.strip().lower())
    seconds = int(m.group(1)) * _DURATION_UNITS[m.group(2)] if m else 0
    if seconds <= 0:
        raise CommandError(f"--expires: expected a duration like 30m, 12h, 7d or 2w, got {text!r}")
    if seconds > MAX_TOKEN_DAYS * 86400:
        raise CommandError(f"--expires: at most {MAX_TOKEN_DAYS} days")
    return seconds


def parse_uses(text: str) -> int:
    try:
        uses = int(text.strip())
    except ValueError:
        uses = 0
    if not 1 <= uses <= MAX_TOKEN_USES:
        raise CommandError(f"--uses: expected a whole number from 1 to {MAX_TOKEN_USES}")
    return uses


def _token_new_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uses", required=True, help="how many accounts may sign up with it")
    p.add_argument("--expires", required=True, help="how long it is valid: 30m, 12h, 7d, 2w")
    data_dir_arg(p)


@command("token new", "make a registration token for the embedded homeserver")(_token_new_args)
async def cmd_token_new(args: argparse.Namespace) -> int:
    checked = check_all(
        {"uses": lambda: parse_uses(args.uses), "expires": lambda: parse_duration(args.expires)}
    )
    uses, seconds = checked["uses"], checked["expires"]
    expires_ms = int((time.time() + seconds) * 1000)
    async with embedded_homeserver(data_dir(args)) as hs:
        token = await hs.create_registration_token(uses=uses, expires_ms=expires_ms)
    print(token.token)
    print(f"valid for {uses} sign-up(s) until {_utc(expires_ms)}", file=sys.stderr)
    return 0


def _utc(ms: int | None) -> str:
    if ms is None:
        return "never expires"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _token_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="include used-up and expired tokens")
    data_dir_arg(p)


@command("token list", "show the registration tokens and their uses")(_token_list_args)
async def cmd_token_list(args: argparse.Namespace) -> int:
    async with embedded_homeserver(data_dir(args)) as hs:
        tokens = await hs.registration_tokens()
    now_ms = int(time.time() * 1000)
    shown = [t for t in tokens if args.all or t.valid(now_ms)]
    if not shown:
        print("no valid registration token; make one with `e2ecounsel token new`")
        return 0
    rows = [["TOKEN", "USED", "ALLOWED", "EXPIRES", "STATUS"]]
    for t in shown:
        allowed = "unlimited" if t.uses_allowed is None else str(t.uses_allowed)
        status = "valid" if t.valid(now_ms) else "used up or expired"
        rows.append([t.token, str(t.completed), allowed, _utc(t.expiry_ms), status])
    print_table(rows)
    return 0


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart: easy to read and to `awk`."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _token_revoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "token",
        metavar="TOKEN",
        help="the token to delete (one that starts with '-' goes after --: token revoke -- -Ab1)",
    )
    data_dir_arg(p)


@command("token revoke", "delete a registration token")(_token_revoke_args)
async def cmd_token_revoke(args: argparse.Namespace) -> int:
    async with embedded_homeserver(data_dir(args)) as hs:
        found = await hs.revoke_registration_token(args.token.strip())
    if not found:
        raise CommandError("no such registration token; see `e2ecounsel token list --all`")
    print("revoked; nobody can sign up with it any more")
    return 0


# ---------------------------------------------------------------------- doctor


def _doctor_args(p: argparse.ArgumentParser) -> None:
    data_dir_arg(p)


@command("doctor", "check a running installation and say what to fix")(_doctor_args)
async def cmd_doctor(args: argparse.Namespace) -> int:
    from e2ecounsel.doctor import diagnose, report

    text, healthy = report(await diagnose(data_dir(args)))
    print(text)
    return 0 if healthy else 1


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
