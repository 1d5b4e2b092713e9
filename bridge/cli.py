"""The bridge's commands for ``e2ecounsel``: ``up``, ``bridge``, the roster and the audit.

Registered through the ``e2ecounsel.commands`` entry point so the core CLI
never imports the bot.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bridge.app import Bridge, BridgeStatus
from bridge.persistence.bookings import Bookings, parse_days_off
from bridge.persistence.pages import Pages
from bridge.persistence.store import BridgeStore, Counselor
from bridge.roster import (
    parse_capacity,
    parse_credentials,
    parse_languages,
    parse_mxid,
    parse_name,
    parse_on_off,
    parse_reply_windows,
    parse_specialties,
    parse_timezone,
)
from e2ecounsel.cli import (
    account_problem,
    check_all,
    command,
    data_dir,
    data_dir_arg,
    setup_logging,
    wait_for_signal,
)
from e2ecounsel.config import BridgeConfig, load_config, write_config
from e2ecounsel.domain.booking import parse_weekly
from e2ecounsel.errors import CommandError
from e2ecounsel.homeserver import EmbeddedHomeserver, HomeserverInfo, RegistrationToken
from e2ecounsel.policy import load_policy
from e2ecounsel.sealing import KEY_FILE_ENV, placement_of_sealing_key

BOT_LOCALPART = "counsel"
RECOVERY_KEY_FILE = "bot-recovery-key.txt"
# The token `up` makes on the first start: enough to try the service, not an open door.
FIRST_TOKEN_USES = 10
FIRST_TOKEN_DAYS = 7


def register() -> None:
    """Entry point: importing this module registers its commands."""


def _up_args(p: argparse.ArgumentParser) -> None:
    data_dir_arg(p)
    p.add_argument(
        "--port", type=int, default=None, help="homeserver port on 127.0.0.1 (default 8008)"
    )
    p.add_argument(
        "--behind-proxy",
        action="store_true",
        help="a TLS reverse proxy is in front: trust its X-Forwarded-For header",
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
    hs = EmbeddedHomeserver(root, port=args.port, behind_proxy=args.behind_proxy)
    info = hs.ensure_config()
    config_path = root / "bridge.toml"
    first_start = not config_path.exists()
    await hs.start()
    bridge: Bridge | None = None
    try:
        config = await _ensure_bridge_config(hs, info, config_path, root)
        bridge = Bridge.from_config(config)
        status = await bridge.start()
        _forget_password(config_path, config, bridge, status)
        token = None
        if first_start:
            token = await hs.create_registration_token(
                uses=FIRST_TOKEN_USES,
                expires_ms=int((time.time() + FIRST_TOKEN_DAYS * 86400) * 1000),
            )
        recovery_file = _save_recovery_key(root, status.recovery_key)
        assert bridge.store is not None
        escalation = await Escalation.read(bridge.store)
        print(
            banner(
                info,
                status,
                root,
                token=token,
                recovery_file=recovery_file,
                escalation=escalation,
            ),
            flush=True,
        )
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
    """First run: register the bot and write its config. Later runs: reuse both.

    The password is written for the first login only; `up` removes it once the bot is signed
    in and cross-signed.
    """
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


def _save_recovery_key(root: Path, recovery_key: str | None) -> Path | None:
    """Write a newly created recovery key to a 0600 file (never to the terminal or a log)."""
    if recovery_key is None:
        return None
    path = root / RECOVERY_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(
            "# The e2ecounsel bot's recovery key. It restores the bot's identity if its data\n"
            "# dir is ever lost. Keep it offline (a password manager, paper), then delete this\n"
            "# file.\n"
            f"{recovery_key}\n"
        )
    return path


@dataclass(frozen=True)
class Escalation:
    """Who a crisis page or an SLA escalation can reach, as the bridge's store says at start."""

    supervisors: int
    room: str | None
    on_call: int

    @classmethod
    async def read(cls, store: BridgeStore) -> Escalation:
        pages = Pages(store.db)
        counselors = await store.list_counselors(active_only=True)
        return cls(
            supervisors=len(await pages.supervisors()),
            room=await pages.supervisors_room(),
            on_call=sum(1 for c in counselors if c.on_call),
        )

    @property
    def possible(self) -> bool:
        return self.supervisors > 0 and self.room is not None

    def lines(self) -> list[str]:
        if self.supervisors == 0:
            people = "no supervisors yet: `e2ecounsel supervisor add MXID`"
        elif self.room is None:
            people = (
                f"{self.supervisors} on the list; their room is not created yet (the running "
                "bridge makes it within seconds)"
            )
        else:
            people = f"{self.supervisors} on the list; their room {self.room}"
        on_call = (
            f"{self.on_call} counselor(s)"
            if self.on_call
            else "nobody: `e2ecounsel counselor on-call MXID on`"
        )
        verdict = (
            "possible: crisis pages and SLA escalations reach the supervisors"
            if self.possible
            else "NOT possible yet: crisis pages and SLA escalations reach no supervisor"
        )
        return [
            f"  supervisors         {people}",
            f"  on call             {on_call}",
            f"  escalation          {verdict}",
        ]


def banner(
    info: HomeserverInfo,
    status: BridgeStatus,
    root: Path,
    *,
    token: RegistrationToken | None = None,
    recovery_file: Path | None = None,
    escalation: Escalation,
) -> str:
    signed = "yes" if status.cross_signed else "NO"
    make_token = "e2ecounsel token new --uses N --expires 7d"
    if token is not None:
        until = datetime.fromtimestamp((token.expiry_ms or 0) / 1000, UTC)
        registration = [
            f"  registration token  {token.token}",
            f"                      ({token.uses_allowed} sign-ups, until {until:%Y-%m-%d %H:%M}"
            " UTC; shown once)",
        ]
    else:
        registration = [f"  registration        make a token: {make_token}"]
    key_warning = []
    key_file = placement_of_sealing_key(root)
    if key_file is not None:
        key_warning = [
            f"  WARNING             the sealing key {key_file} sits beside the database:",
            "                      a copy of the data dir opens every sealed column. Move it",
            f"                      out and set {KEY_FILE_ENV} (see the README).",
        ]
    return "\n".join(
        [
            "",
            "e2ecounsel is up.",
            f"  homeserver          {info.base_url}  (server name {info.server_name})",
            f"  bot                 {status.user_id}",
            f"  bot device          {status.device_id}  (cross-signed: {signed})",
            *registration,
            f"  data dir            {root}",
            *(
                [
                    f"  bot recovery key    written to {recovery_file} (0600, this time only):",
                    "                      keep it offline, then delete the file; it restores",
                    "                      the bot's identity if its data dir is ever lost",
                ]
                if recovery_file is not None
                else []
            ),
            *key_warning,
            *escalation.lines(),
            "",
            "Connect:",
            f"  Element:   sign up on {info.base_url} with a registration token,",
            f"             then start an encrypted direct chat with {status.user_id}.",
            f"  Counselor: e2ecounsel tui --homeserver {info.base_url}",
            "  Accounts:  e2ecounsel user add NAME [--admin]",
            f"  Tokens:    {make_token}; e2ecounsel token list",
            "",
            "Press Ctrl-C to stop.",
        ]
    )


def _bridge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="the bridge's TOML config file")


def _forget_password(
    config_path: Path, config: BridgeConfig, bridge: Bridge, status: BridgeStatus
) -> None:
    """Once the bot is signed in and cross-signed, its password leaves ``bridge.toml``:
    the saved session (access token and device) is what persists from then on."""
    if config.bot_password is not None and status.cross_signed and bridge.session.has_stored_login:
        write_config(config_path, replace(config, bot_password=None))


@command("bridge", "run the bridge alone against any homeserver")(_bridge_args)
async def cmd_bridge(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.log_level, config.data_dir / "logs" / "bridge.log")
    bridge = Bridge.from_config(config)
    try:
        status = await bridge.start()
        _forget_password(args.config, config, bridge, status)
        print(f"bridge online as {status.user_id} (device {status.device_id})", flush=True)
        await wait_for_signal()
    finally:
        await bridge.stop()
    return 0


# ---------------------------------------------------------------------- roster and audit
#
# These commands open the bridge's database directly (SQLite in WAL mode copes
# with the running bridge next to them) and check every value before they
# change anything: a bad value ends with one line and an untouched database.


def _store_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data dir of `e2ecounsel up` (default: $E2ECOUNSEL_DATA_DIR or "
        "~/.local/share/e2ecounsel)",
    )
    where.add_argument(
        "--config", type=Path, default=None, help="the bridge's TOML config file (`bridge` setups)"
    )


def _where(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The data dir and policies folder the command works on.

    With ``--data-dir`` the ``bridge.toml`` that ``up`` wrote there (if any)
    names the policies folder, so the roster is checked against the same
    policies the bridge runs with.
    """
    if args.config is not None:
        config = load_config(args.config)
        return config.data_dir, config.policies_dir
    root = data_dir(args)
    written = root / "bridge.toml"
    policies = load_config(written).policies_dir if written.is_file() else None
    return root, policies


def _database(args: argparse.Namespace) -> str | Path | None:
    """The ``database`` setting of the config :func:`_where` reads; None: ``bridge.db``."""
    if args.config is not None:
        return load_config(args.config).database
    written = data_dir(args) / "bridge.toml"
    return load_config(written).database if written.is_file() else None


@asynccontextmanager
async def _changing(args: argparse.Namespace) -> AsyncIterator[BridgeStore]:
    """The bridge's store in one transaction: every change of the command, or none."""
    root, _ = _where(args)
    store = await BridgeStore.open_data_dir(root, create=False, database=_database(args))
    try:
        async with store.transaction():
            yield store
    finally:
        await store.close()


def _counselor_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "user_id", metavar="MXID", help="the counselor's Matrix id, e.g. @dewi:example.org"
    )
    p.add_argument("--name", required=True, help="shown to clients (1–80 characters)")
    p.add_argument(
        "--credentials",
        required=True,
        help='shown to clients, e.g. "M.Psi., Psikolog, licence SIPP 1234"',
    )
    p.add_argument("--languages", required=True, help="language codes of the policy, e.g. id,en")
    p.add_argument(
        "--specialties", required=True, help="specialty ids of the policy, e.g. anxiety,career"
    )
    p.add_argument("--capacity", required=True, help="most active clients at once (1–500)")
    p.add_argument("--timezone", required=True, help="IANA time zone, e.g. Asia/Jakarta")
    p.add_argument(
        "--reply-windows", required=True, help="local reply times, e.g. 09:00,13:00,19:00"
    )
    p.add_argument("--on-call", action="store_true", help="page this counselor in a crisis")
    p.add_argument(
        "--update",
        action="store_true",
        help="replace the profile of a counselor already on the roster",
    )
    p.add_argument(
        "--no-account-check",
        action="store_true",
        help="do not ask the homeserver whether the account exists (offline set-up)",
    )
    _store_args(p)


@command("counselor add", "add a counselor to the roster")(_counselor_add_args)
async def cmd_counselor_add(args: argparse.Namespace) -> int:
    root, policies_dir = _where(args)
    policy = load_policy(policies_dir)
    specialties = [s.id for s in policy.service.specialties]
    # Every flag is checked before one complaint is made: all of them are reported at once.
    checked = check_all(
        {
            "user_id": lambda: parse_mxid(args.user_id),
            "name": lambda: parse_name(args.name),
            "credentials": lambda: parse_credentials(args.credentials),
            "languages": lambda: parse_languages(args.languages, policy.languages),
            "specialties": lambda: parse_specialties(args.specialties, specialties),
            "capacity": lambda: parse_capacity(args.capacity),
            "timezone": lambda: parse_timezone(args.timezone),
            "reply_windows": lambda: parse_reply_windows(args.reply_windows),
        }
    )
    counselor = Counselor(**checked, on_call=args.on_call, active=True)
    if not args.no_account_check:
        problem = await account_problem(root, _homeserver_url(args, root), counselor.user_id)
        if problem is not None:
            raise CommandError(f"{problem}; nothing was changed")
    store = await BridgeStore.open_data_dir(root, create=True, database=_database(args))
    try:
        async with store.transaction():
            existing = await store.get_counselor(counselor.user_id)
            if existing is None:
                await store.add_counselor(counselor)
                done = "added"
            elif existing.active and not args.update:
                raise CommandError(
                    f"{counselor.user_id} is already on the roster; add --update to replace "
                    "their profile"
                )
            else:
                await store.update_counselor(
                    replace(
                        counselor,
                        case_room_id=existing.case_room_id,
                        on_call=counselor.on_call or (existing.active and existing.on_call),
                    )
                )
                done = "updated" if existing.active else "added back"
            action = "counselor.update" if done == "updated" else "counselor.add"
            await store.audit("operator", action, detail=store.actor_ref(counselor.user_id))
    finally:
        await store.close()
    print(
        f"{done} {counselor.user_id}: capacity {counselor.capacity}, "
        f"languages {','.join(counselor.languages)}, "
        f"reply windows {','.join(counselor.reply_windows)} ({counselor.timezone})"
    )
    return 0


def _homeserver_url(args: argparse.Namespace, root: Path) -> str | None:
    """The homeserver the bridge of this command's data dir or config talks to, if known."""
    config = args.config if args.config is not None else root / "bridge.toml"
    return load_config(config).homeserver_url if config.is_file() else None


def _counselor_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="include removed counselors")
    _store_args(p)


@command("counselor list", "show the roster with each counselor's caseload")(_counselor_list_args)
async def cmd_counselor_list(args: argparse.Namespace) -> int:
    root, policies_dir = _where(args)
    policy = load_policy(policies_dir)
    store = await BridgeStore.open_data_dir(root, create=False, database=_database(args))
    try:
        roster = await store.list_counselors(active_only=not args.all)
        loads = await store.caseloads(dormant_after_days=policy.service.dormant_after_days)
    finally:
        await store.close()
    if not roster:
        print("the roster is empty; add counselors with `e2ecounsel counselor add`")
        return 0
    header = ["ID", "NAME", "LANGUAGES", "SPECIALTIES", "CAPACITY", "CASELOAD", "TIME ZONE"]
    header += ["REPLY WINDOWS", "ON CALL"] + (["STATUS"] if args.all else [])
    rows = [header]
    for c in roster:
        row = [
            c.user_id,
            c.name,
            ",".join(c.languages),
            ",".join(c.specialties),
            str(c.capacity),
            str(loads.get(c.user_id, 0)),
            c.timezone,
            ",".join(c.reply_windows),
            "yes" if c.on_call else "no",
        ]
        rows.append(row + (["active" if c.active else "removed"] if args.all else []))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _counselor_id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id", metavar="MXID", help="the counselor's Matrix id")
    _store_args(p)


async def _require_active(store: BridgeStore, user_id: str) -> int:
    """The counselor's active caseload; CommandError if they are not on the roster."""
    counselor = await store.get_counselor(user_id)
    if counselor is None or not counselor.active:
        raise CommandError(f"{user_id} is not on the roster; see `e2ecounsel counselor list`")
    return len(await store.active_for_counselor(user_id))


@command("counselor remove", "take a counselor off the roster")(_counselor_id_args)
async def cmd_counselor_remove(args: argparse.Namespace) -> int:
    user_id = parse_mxid(args.user_id)
    async with _changing(args) as store:
        clients = await _require_active(store, user_id)
        await store.deactivate_counselor(user_id)
        await store.audit("operator", "counselor.remove", detail=store.actor_ref(user_id))
    if clients:
        print(
            f"removed {user_id}; the bridge re-matches their {clients} active client(s) "
            "and tells each of them (at once if it is running, otherwise when it starts)"
        )
    else:
        print(f"removed {user_id}; they had no active clients")
    return 0


def _counselor_schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id", metavar="MXID", help="the counselor's Matrix id")
    p.add_argument(
        "--availability",
        default="",
        help='weekly live-session hours in their zone, e.g. "mon-fri 10:00-16:00; sat 09:00-12:00"',
    )
    p.add_argument("--days-off", default="", help="weekdays without reply rounds, e.g. sat,sun")
    _store_args(p)


@command("counselor schedule", "set live-session hours and days off")(_counselor_schedule_args)
async def cmd_counselor_schedule(args: argparse.Namespace) -> int:
    user_id = parse_mxid(args.user_id)
    try:
        parse_days_off(args.days_off)
    except ValueError as exc:
        raise CommandError(f"--days-off: {exc}") from None
    root, _ = _where(args)
    store = await BridgeStore.open_data_dir(root, create=False, database=_database(args))
    try:
        counselor = await store.get_counselor(user_id)
        if counselor is None:
            raise CommandError(f"{user_id} is not on the roster; add them first")
        if args.availability.strip():
            try:
                parse_weekly(args.availability, counselor.timezone)
            except ValueError as exc:
                raise CommandError(f"--availability: {exc}") from None
        await Bookings(store).set_schedule(
            user_id, availability=args.availability.strip(), days_off=args.days_off.strip()
        )
        await store.audit("operator", "counselor.schedule", detail=store.actor_ref(user_id))
    finally:
        await store.close()
    print(f"schedule of {user_id} saved")
    return 0


def _counselor_on_call_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id", metavar="MXID", help="the counselor's Matrix id")
    p.add_argument("state", metavar="on|off", help="whether crisis pages reach them")
    _store_args(p)


@command("counselor on-call", "put a counselor on or off call")(_counselor_on_call_args)
async def cmd_counselor_on_call(args: argparse.Namespace) -> int:
    user_id = parse_mxid(args.user_id)
    on = parse_on_off(args.state)
    root, _ = _where(args)
    store = await BridgeStore.open_data_dir(root, create=False, database=_database(args))
    try:
        async with store.transaction():
            await _require_active(store, user_id)
            await store.set_on_call(user_id, on)
            await store.audit(
                "operator",
                "counselor.on_call",
                detail=f"{'on' if on else 'off'}:{store.actor_ref(user_id)}",
            )
    finally:
        await store.close()
    print(f"{user_id} is now {'on' if on else 'off'} call")
    return 0


def _supervisor_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id", metavar="MXID", help="the supervisor's Matrix id")
    p.add_argument("--name", default=None, help="how clients and colleagues see them")
    _store_args(p)


@command("supervisor add", "make someone a supervisor (invited to the supervisors' room)")(
    _supervisor_add_args
)
async def cmd_supervisor_add(args: argparse.Namespace) -> int:
    user_id = parse_mxid(args.user_id)
    name = parse_name(args.name if args.name is not None else user_id[1:].split(":", 1)[0])
    async with _changing(args) as store:
        new = await Pages(store.db).add_supervisor(user_id, name)
        await store.audit("operator", "supervisor.add", detail=store.actor_ref(user_id))
    if new:
        print(
            f"added supervisor {user_id}; the bridge invites them to the supervisors' room "
            "(at once if it is running, otherwise when it starts)"
        )
    else:
        print(f"{user_id} is already a supervisor; name set to {name!r}")
    return 0


def _supervisor_id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id", metavar="MXID", help="the supervisor's Matrix id")
    _store_args(p)


@command("supervisor remove", "remove a supervisor (removed from the supervisors' room)")(
    _supervisor_id_args
)
async def cmd_supervisor_remove(args: argparse.Namespace) -> int:
    user_id = parse_mxid(args.user_id)
    async with _changing(args) as store:
        if not await Pages(store.db).remove_supervisor(user_id):
            raise CommandError(f"{user_id} is not a supervisor; see `e2ecounsel supervisor list`")
        await store.audit("operator", "supervisor.remove", detail=store.actor_ref(user_id))
    print(f"removed supervisor {user_id}; the bridge removes them from the supervisors' room")
    return 0


def _supervisor_list_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)


@command("supervisor list", "show the supervisors")(_supervisor_list_args)
async def cmd_supervisor_list(args: argparse.Namespace) -> int:
    root, _ = _where(args)
    store = await BridgeStore.open_data_dir(root, create=False, database=_database(args))
    try:
        pages = Pages(store.db)
        people = await pages.supervisors()
        room = await pages.supervisors_room()
    finally:
        await store.close()
    if not people:
        print("no supervisors; add one with `e2ecounsel supervisor add MXID`")
        return 0
    for who in people:
        print(f"{who.user_id}  {who.name}")
    print(f"supervisors' room: {room or 'not created yet (the bridge creates it when it runs)'}")
    return 0


def _audit_verify_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)


@command("audit verify", "check that no audit line was changed or removed")(_audit_verify_args)
async def cmd_audit_verify(args: argparse.Namespace) -> int:
    root, _ = _where(args)
    store = await BridgeStore.open_data_dir(root, create=False, database=_database(args))
    try:
        report = await store.verify_audit()
    finally:
        await store.close()
    if not report.ok:
        raise CommandError(
            f"audit trail broken at row {report.first_bad_seq}: {report.problem} "
            f"({report.rows} rows present)"
        )
    print(f"audit trail intact: {report.rows} rows")
    return 0
