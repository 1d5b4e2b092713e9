"""``e2ecounsel doctor``: checks a running installation and says what to fix.

Each check returns :class:`Finding` values: ``ok``, ``warn`` (works, but weaker than it should
be) or ``fail`` (something people rely on is broken or unsafe). The checks read the data dir
of ``e2ecounsel up`` (``bridge.toml``, the embedded homeserver's files, the bridge's database)
and ask the running homeserver; they change nothing.

The roster, the supervisors and their room are read through the store port from the configured
``database`` (SQLite or PostgreSQL) with plain SELECTs: the core never imports the bot, and these
ids are plain columns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import yaml

from e2ecounsel.config import BridgeConfig, load_config
from e2ecounsel.errors import E2ECounselError, HomeserverError
from e2ecounsel.homeserver import MIN_PASSWORD_LENGTH, EmbeddedHomeserver, request_json
from e2ecounsel.matrix.crosssigning import UserIdentity
from e2ecounsel.policy import load_policy
from e2ecounsel.sealing import KEY_ENV, KEY_FILE_ENV, placement_of_sealing_key
from e2ecounsel.store import Database
from e2ecounsel.store.dialects import redact_url

Level = Literal["ok", "warn", "fail"]
ADD_SUPERVISOR: Final = "e2ecounsel supervisor add MXID"


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class People:
    """Who the bridge's database names: the roster, the supervisors, the room it keeps for them."""

    counselors: list[str] = field(default_factory=list)  # active, by id
    on_call: list[str] = field(default_factory=list)
    supervisors: list[str] = field(default_factory=list)
    supervisors_room: str | None = None


async def read_people(config: BridgeConfig) -> People:
    """The bridge's :class:`People`, read-only; an SQLite file not made yet holds nobody.

    Raises whatever the database raises when it cannot be read (not reachable,
    not an e2ecounsel database, a schema older than these tables).
    """
    target = config.database_target
    if isinstance(target, Path) and not target.is_file():
        return People()
    db = await Database.open(target, None)
    try:
        rows = await db.fetchall(
            "SELECT user_id, on_call FROM counselors WHERE active = 1 ORDER BY user_id"
        )
        supervisors = await db.fetchall("SELECT user_id FROM supervisors ORDER BY user_id")
        room = await db.fetchval(
            "SELECT room_id FROM rooms WHERE kind = 'supervisors' ORDER BY room_id LIMIT 1"
        )
    finally:
        await db.close()
    return People(
        counselors=[str(r[0]) for r in rows],
        on_call=[str(r[0]) for r in rows if r[1]],
        supervisors=[str(r[0]) for r in supervisors],
        supervisors_room=None if room is None else str(room),
    )


def _ok(check: str, detail: str) -> Finding:
    return Finding("ok", check, detail)


async def diagnose(root: Path) -> list[Finding]:
    """Every check, in the order an operator would fix things."""
    findings: list[Finding] = []
    config_path = root / "bridge.toml"
    try:
        config = load_config(config_path)
    except E2ECounselError as exc:
        return [Finding("fail", "bridge config", str(exc), "run `e2ecounsel up` once")]
    findings += _check_key_placement(root)
    findings += _check_bot_password(config, config_path)
    try:
        people = await read_people(config)
    except Exception as exc:  # noqa: BLE001 - whatever stops the read is what to report
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        findings.append(
            Finding(
                "fail",
                "bridge database",
                f"cannot read {redact_url(str(config.database_target))}: {why}",
                "check the `database` setting in bridge.toml; start the bridge once "
                "(`e2ecounsel up`) so its schema is up to date",
            )
        )
        return findings
    hs = EmbeddedHomeserver(root)
    if not (root / "synapse" / "homeserver.yaml").is_file():
        findings.append(
            Finding(
                "warn",
                "homeserver",
                "not the embedded homeserver: its checks are skipped",
                "check registration and the admin API of your own homeserver by hand",
            )
        )
        return findings + _check_supervisors(config, people)
    hs.ensure_config()
    if not await hs.is_healthy():
        findings.append(
            Finding(
                "fail",
                "homeserver",
                f"nothing answers on {hs.info.base_url}",
                "start it: e2ecounsel up",
            )
        )
        return findings
    findings.append(_ok("homeserver", f"answers on {hs.info.base_url}"))
    findings += await _check_admin_listener(hs)
    findings += _check_registration_config(hs)
    findings += await _check_tokens(hs)
    findings += await _check_bot_signed(hs, config.bot_user_id)
    findings += _check_supervisors(config, people)
    findings += await _check_supervisors_membership(hs, config, people)
    findings += await _check_roster(hs, people)
    return findings


def _check_key_placement(root: Path) -> list[Finding]:
    beside = placement_of_sealing_key(root)
    if beside is None:
        return [_ok("sealing key", "kept outside the data dir")]
    if not beside.exists():
        return [
            Finding(
                "warn",
                "sealing key",
                f"no key in the data dir, and neither {KEY_ENV} nor {KEY_FILE_ENV} is set here",
                "run doctor with the environment the bridge runs with",
            )
        ]
    return [
        Finding(
            "fail",
            "sealing key",
            f"{beside} sits beside the database: a copy of the data dir opens every sealed column",
            f"move it out of {root} and set {KEY_FILE_ENV} to its new path (see the README)",
        )
    ]


def _check_bot_password(config: BridgeConfig, path: Path) -> list[Finding]:
    if config.bot_password is None:
        return [_ok("bot password", "not stored (the bridge keeps its own session)")]
    return [
        Finding(
            "warn",
            "bot password",
            f"{path} (or the environment) still holds the bot's password",
            "start the bridge once with `e2ecounsel up` (it removes it after signing in), or "
            "delete the `password` line",
        )
    ]


async def _check_admin_listener(hs: EmbeddedHomeserver) -> list[Finding]:
    url = f"{hs.info.base_url}/_synapse/admin/v1/server_version"
    status, _ = await request_json("GET", url)
    if status == 200 or hs.info.admin_url == hs.info.base_url:
        return [
            Finding(
                "fail",
                "admin API",
                f"served on the client listener {hs.info.base_url} (a configuration of an "
                "older version)",
                f"stop e2ecounsel, move {hs.config_path} away and run `e2ecounsel up` again "
                "(with the same --port): it writes the new layout; accounts and rooms stay",
            )
        ]
    return [_ok("admin API", f"only on the loopback listener {hs.info.admin_url}")]


def _check_registration_config(hs: EmbeddedHomeserver) -> list[Finding]:
    config = yaml.safe_load(hs.config_path.read_text(encoding="utf-8")) or {}
    findings: list[Finding] = []
    open_door = config.get("enable_registration") and not config.get("registration_requires_token")
    if open_door:
        findings.append(
            Finding(
                "fail",
                "registration",
                "anyone can create an account: no registration token is required",
                f"set `registration_requires_token: true` in {hs.config_path}",
            )
        )
    else:
        findings.append(_ok("registration", "needs a registration token"))
    policy = (config.get("password_config") or {}).get("policy") or {}
    length = policy.get("minimum_length") or 0
    if not policy.get("enabled") or length < MIN_PASSWORD_LENGTH:
        findings.append(
            Finding(
                "fail",
                "password policy",
                "passwords of any length are accepted"
                if not policy.get("enabled")
                else f"passwords of {length} characters are accepted",
                f"add `password_config: {{policy: {{enabled: true, minimum_length: "
                f"{MIN_PASSWORD_LENGTH}}}}}` to {hs.config_path}, then restart",
            )
        )
    else:
        findings.append(_ok("password policy", f"at least {length} characters"))
    stale = hs.config_path.with_name("registration_token")
    if stale.exists():
        findings.append(
            Finding(
                "warn",
                "registration tokens",
                f"{stale} holds a token saved by an older version",
                "revoke it (e2ecounsel token revoke TOKEN) and delete the file",
            )
        )
    log_config = hs.config_path.with_name("log.config")
    if "RedactRegistrationTokens" not in log_config.read_text(encoding="utf-8"):
        findings.append(
            Finding(
                "fail",
                "homeserver log",
                "registration tokens are written to the homeserver's log at every sign-up",
                f"move {log_config} away and restart: e2ecounsel writes one with the filter",
            )
        )
    return findings


async def _check_tokens(hs: EmbeddedHomeserver) -> list[Finding]:
    now_ms = int(time.time() * 1000)
    valid = [t for t in await hs.registration_tokens() if t.valid(now_ms)]
    unbounded = [t for t in valid if t.uses_allowed is None or t.expiry_ms is None]
    if unbounded:
        names = ", ".join(f"{t.token[:4]}…" for t in unbounded)
        return [
            Finding(
                "fail",
                "registration tokens",
                f"{len(unbounded)} token(s) without a use limit or expiry ({names})",
                "revoke each: e2ecounsel token revoke TOKEN (see `e2ecounsel token list`); "
                "make bounded ones: e2ecounsel token new --uses N --expires 7d",
            )
        ]
    return [_ok("registration tokens", f"{len(valid)} valid, each with a use limit and expiry")]


async def _check_bot_signed(hs: EmbeddedHomeserver, bot: str) -> list[Finding]:
    body = await hs.admin_call(
        "POST",
        "/_matrix/client/v3/keys/query",
        json_body={"device_keys": {bot: []}},
        what="look up the bot's keys",
    )
    ident = _identity(body, bot)
    devices = sorted(ident.devices)
    unsigned = [d for d in devices if not ident.is_device_signed(d)]
    if ident.master_key is None:
        return [
            Finding(
                "fail",
                "bot cross-signing",
                f"{bot} has no cross-signing identity: clients will not share room keys with it",
                "restart the bridge (`e2ecounsel up`); it sets up cross-signing at start",
            )
        ]
    if not devices or unsigned:
        return [
            Finding(
                "fail",
                "bot cross-signing",
                f"device(s) {', '.join(unsigned) or '(none)'} of {bot} are not cross-signed",
                "restart the bridge (`e2ecounsel up`); it signs its device at start; delete "
                "devices it no longer uses",
            )
        ]
    return [_ok("bot cross-signing", f"{bot}: {len(devices)} device(s), all cross-signed")]


def _identity(body: Mapping[str, Any], user_id: str) -> UserIdentity:
    """One user's part of a raw ``/keys/query`` answer."""
    ident = UserIdentity(user_id=user_id)
    for usage, attr in (("master_keys", "master"), ("self_signing_keys", "self_signing")):
        section = body.get(usage)
        if isinstance(section, Mapping) and isinstance(section.get(user_id), dict):
            setattr(ident, attr, section[user_id])
    devices = (body.get("device_keys") or {}).get(user_id)
    if isinstance(devices, Mapping):
        ident.devices = {k: v for k, v in devices.items() if isinstance(v, dict)}
    return ident


def _supervisors_room(config: BridgeConfig, people: People) -> str | None:
    """The configured room (an id, or an alias doctor warns about), else the one the bridge made."""
    policy = load_policy(config.policies_dir)
    return config.supervisors_room or policy.service.supervisors_room or people.supervisors_room


def _check_supervisors(config: BridgeConfig, people: People) -> list[Finding]:
    findings: list[Finding] = []
    if not people.supervisors:
        findings.append(
            Finding(
                "fail",
                "supervisors",
                "none on the list: crisis pages and SLA escalations reach no supervisor",
                f"{ADD_SUPERVISOR} (the bridge makes their room and invites them)",
            )
        )
    else:
        findings.append(_ok("supervisors", f"{len(people.supervisors)} on the list"))
    room = _supervisors_room(config, people)
    if room is None:
        if people.supervisors:
            findings.append(
                Finding(
                    "fail",
                    "supervisors' room",
                    "not created yet: pages have nowhere to go",
                    "start the bridge (`e2ecounsel up`): it creates the room and invites them",
                )
            )
        return findings
    if room.startswith("#"):
        findings.append(
            Finding(
                "warn",
                "supervisors' room",
                f"configured by alias {room}: whoever claims the alias first receives pages",
                "use the room id (!…) instead, or remove `supervisors_room` and let the "
                "bridge make the room",
            )
        )
    else:
        findings.append(_ok("supervisors' room", room))
    return findings


async def _check_supervisors_membership(
    hs: EmbeddedHomeserver, config: BridgeConfig, people: People
) -> list[Finding]:
    room = _supervisors_room(config, people)
    if room is None or room.startswith("#"):
        return []
    try:
        body = await hs.admin_call(
            "GET",
            f"/_synapse/admin/v1/rooms/{quote(room, safe='')}/members",
            what="list the supervisors' room",
        )
    except HomeserverError:
        return [
            Finding(
                "fail",
                "supervisors' room",
                f"{room} does not exist on {hs.info.server_name}",
                "remove `supervisors_room` from bridge.toml and restart the bridge: it makes "
                "the room",
            )
        ]
    members = body.get("members")
    if not isinstance(members, list) or config.bot_user_id not in members:
        return [
            Finding(
                "fail",
                "supervisors' room",
                f"the bot is not a member of {room}: pages cannot reach it",
                f"invite {config.bot_user_id} to the room (it joins by itself)",
            )
        ]
    joined = [s for s in people.supervisors if s in members]
    findings = [
        _ok(
            "supervisors' room",
            f"the bot and {len(joined)} of {len(people.supervisors)} supervisor(s) are in it",
        )
    ]
    if len(joined) < len(people.supervisors):
        findings.append(
            Finding(
                "warn",
                "supervisors' room",
                f"{len(people.supervisors) - len(joined)} supervisor(s) have not joined yet",
                "they accept the invitation in their Matrix client",
            )
        )
    return findings


async def _check_roster(hs: EmbeddedHomeserver, people: People) -> list[Finding]:
    counselors = people.counselors
    if not counselors:
        return [
            Finding(
                "warn",
                "roster",
                "no counselor on the roster: every client waits",
                "e2ecounsel counselor add MXID --name … (see the README)",
            )
        ]
    server = hs.info.server_name
    findings: list[Finding] = []
    for user_id in counselors:
        if user_id.partition(":")[2] != server:
            why = f"is on another server; {server} does not federate"
        else:
            state = await hs.account_state(user_id)
            if state == "active":
                continue
            why = "has no account here" if state is None else "is deactivated"
        findings.append(
            Finding(
                "fail",
                "roster",
                f"{user_id} {why}: clients matched to them get no answer",
                f"create the account, or take them off: e2ecounsel counselor remove {user_id}",
            )
        )
    if not findings:
        findings.append(_ok("roster", f"{len(counselors)} counselor(s), every account active"))
    if people.on_call:
        findings.append(_ok("on call", f"{len(people.on_call)} counselor(s)"))
    else:
        findings.append(
            Finding(
                "warn",
                "on call",
                "no counselor on call: crisis pages reach the supervisors only",
                "e2ecounsel counselor on-call MXID on",
            )
        )
    return findings


def report(findings: list[Finding]) -> tuple[str, bool]:
    """The text the operator reads, and whether everything that must work works."""
    lines = []
    for f in findings:
        lines.append(f"{f.level.upper():<5} {f.check:<20} {f.detail}")
        if f.fix:
            lines.append(f"{'':<26} fix: {f.fix}")
    failed = sum(f.level == "fail" for f in findings)
    lines.append("")
    lines.append(f"{failed} problem(s) to fix" if failed else "no problem found")
    return "\n".join(lines), failed == 0
