"""The bridge's configuration file (TOML), read into a typed, validated :class:`BridgeConfig`.

Everything is checked when the file is loaded, so a mistake stops the bridge at
start with one line that names the file and the key, instead of failing hours
later. Unknown keys are errors (a typo would otherwise be ignored silently) with
the closest valid key suggested. The sample values of :data:`EXAMPLE_CONFIG`
are refused, like mautrix's ``ForbiddenDefault``: a copied example must be
edited before it runs.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from e2ecounsel.errors import ConfigError
from e2ecounsel.policy.toml import closest

log = logging.getLogger(__name__)

PASSWORD_ENV = "E2ECOUNSEL_BOT_PASSWORD"
DEFAULT_DEVICE_NAME = "e2ecounsel bridge"
DEFAULT_DATA_DIR = "data"
DATABASE_FILE = "bridge.db"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ANY_SERVER = "*"

#: Every valid key, per section, in the order they are written.
SCHEMA: dict[str, tuple[str, ...]] = {
    "homeserver": ("url",),
    "bot": ("user_id", "password", "device_name"),
    "paths": ("data_dir", "policies_dir", "database"),
    "bridge": ("supervisors_room", "allowed_servers"),
    "logging": ("level",),
}

# The sample values of EXAMPLE_CONFIG (and common placeholders): refused on load.
_SAMPLE_URLS = frozenset({"https://matrix.example.com", "https://example.com"})
_SAMPLE_USER_IDS = frozenset({"@bot:example.com"})
_SAMPLE_PASSWORDS = frozenset({"change_me", "changeme", "change-me", "change me", "password"})
_SAMPLE_ROOMS = frozenset({"!abcdefghijklmnop:example.com"})

# Matrix grammar (spec "Identifier grammar"): server_name = hostname [ ":" port ],
# hostname = IPv4 / "[" IPv6 "]" / DNS name; user localpart = [a-z0-9._=/+-]+.
_SERVER_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?)(?::[0-9]{1,5})?"
)
_USER_ID_RE = re.compile(r"@(?P<local>[a-z0-9._=/+-]+):(?P<server>.+)")
_ROOM_ID_RE = re.compile(r"![^\s:]+(?::(?P<server>.+))?")
_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END_RE = re.compile(r"\s*\(at end of document\)\s*$")


@dataclass(frozen=True)
class BridgeConfig:
    """The bridge's settings, validated. Build it with :func:`load_config`."""

    homeserver_url: str
    bot_user_id: str
    bot_password: str | None = field(repr=False)
    data_dir: Path
    policies_dir: Path | None
    supervisors_room: str | None
    allowed_servers: tuple[str, ...]
    device_name: str = DEFAULT_DEVICE_NAME
    log_level: str = "INFO"
    #: A ``postgresql://`` URL or an SQLite file; ``None``: ``data_dir/bridge.db``.
    database: str | Path | None = None

    @property
    def database_target(self) -> str | Path:
        """What the bridge opens its store with (see :meth:`e2ecounsel.store.Database.open`)."""
        return self.database if self.database is not None else self.data_dir / DATABASE_FILE

    @property
    def bot_server(self) -> str:
        """The server name of the bot's own account."""
        return self.bot_user_id.split(":", 1)[1]

    def may_start_intake(self, user_id: str) -> bool:
        """Whether a user of this server may start an intake.

        The bot's own server always may; other servers only when listed in
        ``allowed_servers`` (``"*"`` lists them all).
        """
        _, sep, server = user_id.partition(":")
        if not sep or not user_id.startswith("@"):
            return False
        if server == self.bot_server or ANY_SERVER in self.allowed_servers:
            return True
        return server in self.allowed_servers


EXAMPLE_CONFIG = """\
# e2ecounsel bridge configuration (example).
#
# Copy this file (for example to bridge.toml) and change the values marked
# CHANGE: the bridge refuses to start while a sample value is left in place.
# `e2ecounsel up` writes a ready-made file for the embedded homeserver instead.

[homeserver]
# Client-server API URL of your homeserver. The embedded one listens on
# http://127.0.0.1:8008.
url = "https://matrix.example.com"  # CHANGE

[bot]
# The bot's Matrix account; register it on your homeserver first.
user_id = "@bot:example.com"  # CHANGE
# Needed only for the first login; the bridge keeps its own session afterwards.
# Better: delete this line and set the environment variable
# E2ECOUNSEL_BOT_PASSWORD when starting the bridge the first time.
password = "CHANGE_ME"  # CHANGE
# The name of the bot's device, as others see it in device lists.
device_name = "e2ecounsel bridge"

[paths]
# Relative paths are relative to the folder of this file.
# The bridge's database, keys and encryption store; keep it private and backed up.
data_dir = "data"
# Your edited copy of the policies; leave it out to use the packaged ones.
# policies_dir = "policies"
# The bridge's database: an SQLite file (default: bridge.db in data_dir) or
# PostgreSQL. Give the password in ~/.pgpass or PGPASSWORD, not here.
# database = "postgresql://e2ecounsel@db.example.com/e2ecounsel"

[bridge]
# Room ID (not an alias) of the supervisors' room: crisis pages and
# escalations go there. In Element: Room settings > Advanced.
# supervisors_room = "!abcdefghijklmnop:example.com"
# Servers whose users may start an intake. Users of the bot's own server
# always may; "*" allows every server.
allowed_servers = []

[logging]
# DEBUG, INFO, WARNING or ERROR.
level = "INFO"
"""


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read and validate the configuration file at ``path``.

    ``E2ECOUNSEL_BOT_PASSWORD`` in ``env`` (default: the process environment)
    takes precedence over ``bot.password``, so the password need not be stored.
    Relative paths are taken relative to the file's folder, not the current
    directory, so the bridge behaves the same wherever it is started from.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "no such file; run `e2ecounsel up` to write one, or copy the example "
            "configuration and change its sample values",
            file=path,
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            "is a folder; give the path of the configuration file", file=path
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text; save the file as UTF-8", file=path) from None
    cfg = _parse(text, file=path, base=_folder_of(path), env=environ)
    if cfg.bot_password is not None and not environ.get(PASSWORD_ENV):
        _warn_if_exposed(path)
    return cfg


def write_config(path: Path, cfg: BridgeConfig) -> None:
    """Write ``cfg`` to ``path`` (mode 0600: it may hold the bot's password).

    The file is replaced atomically, and the text is parsed and validated again
    before it is written, so what is written always loads.
    """
    path = Path(path)
    base = _folder_of(path)
    text = _render(cfg, base)
    _parse(text, file=path, base=base, env={})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # in case a stale temporary file had another mode
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the file: {exc.strerror or exc}", file=path) from None


# ---------------------------------------------------------------- parsing


def _folder_of(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute().parent))


def _parse(text: str, *, file: Path, base: Path, env: Mapping[str, str]) -> BridgeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(str(exc)), file=file) from None
    r = _Reader(file, data)

    url = r.string("homeserver", "url", required=True)
    assert url is not None
    url = _check_url(r, url)

    user_id = r.string("bot", "user_id", required=True)
    assert user_id is not None
    _check_user_id(r, user_id)

    password = r.string("bot", "password")
    if password is not None and not password:
        raise r.error("bot.password", f"empty; delete the line, or set {PASSWORD_ENV} instead")
    if password is not None and password.strip().lower() in _SAMPLE_PASSWORDS:
        raise r.error(
            "bot.password",
            "still the example's sample value; set the bot's real password, or delete "
            f"the line and set {PASSWORD_ENV}",
        )
    env_password = env.get(PASSWORD_ENV)
    if env_password:
        if env_password.strip().lower() in _SAMPLE_PASSWORDS:
            raise ConfigError("is a sample value; set the bot's real password", key=PASSWORD_ENV)
        password = env_password

    device_name = r.string("bot", "device_name") or DEFAULT_DEVICE_NAME
    if len(device_name) > 100 or any(ch < " " or ch == "\x7f" for ch in device_name):
        raise r.error("bot.device_name", "expected one line of at most 100 characters")

    data_dir_text = r.string("paths", "data_dir")
    data_dir = _path(r, "paths.data_dir", data_dir_text or DEFAULT_DATA_DIR, base)
    policies_text = r.string("paths", "policies_dir")
    policies_dir = None
    if policies_text is not None:
        policies_dir = _path(r, "paths.policies_dir", policies_text, base)
        if not policies_dir.is_dir():
            raise r.error(
                "paths.policies_dir",
                f"folder {str(policies_dir)!r} not found; fix the path, or delete the "
                "line to use the packaged policies",
            )

    database = _database(r, r.string("paths", "database"), base)

    room = r.string("bridge", "supervisors_room")
    if room is not None:
        _check_room_id(r, room)
    servers = _check_servers(r, r.string_list("bridge", "allowed_servers"))

    level = (r.string("logging", "level") or "INFO").upper()
    if level not in LOG_LEVELS:
        close = closest(level, LOG_LEVELS)
        hint = f"did you mean {close!r}?" if close else "use " + ", ".join(LOG_LEVELS)
        raise r.error("logging.level", f"unknown level; {hint}")

    return BridgeConfig(
        homeserver_url=url,
        bot_user_id=user_id,
        bot_password=password,
        data_dir=data_dir,
        policies_dir=policies_dir,
        supervisors_room=room,
        allowed_servers=servers,
        device_name=device_name,
        log_level=level,
        database=database,
    )


def _database(r: _Reader, value: str | None, base: Path) -> str | Path | None:
    """The ``paths.database`` setting: a ``postgresql://`` URL or an SQLite file path."""
    if value is None:
        return None
    scheme, sep, _ = value.partition("://")
    if not sep:
        return _path(r, "paths.database", value, base)
    if scheme.lower() not in _POSTGRES_SCHEMES:
        raise r.error(
            "paths.database",
            f"unknown database type {scheme!r}; use postgresql://user@host/dbname "
            "or the path of an SQLite file",
        )
    parts = urlsplit(value)
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise r.error("paths.database", "name the database: postgresql://user@host/dbname")
    if parts.password is not None:
        log.warning("paths.database holds a password; put it in ~/.pgpass or PGPASSWORD instead")
    return value


def _toml_error(message: str) -> str:
    """Turn tomllib's message into 'line N, column M: invalid TOML: ...'."""
    pos = _TOML_POS_RE.search(message)
    if pos:
        detail = message[: pos.start()]
        return f"line {pos.group(1)}, column {pos.group(2)}: invalid TOML: {detail}"
    end = _TOML_END_RE.search(message)
    if end:
        return f"end of file: invalid TOML: {message[: end.start()]}"
    return f"invalid TOML: {message}"


def _type_name(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), "a date/time")


class _Reader:
    """Typed access to the parsed TOML that turns every mistake into a ConfigError."""

    def __init__(self, file: Path, data: dict[str, Any]) -> None:
        self.file = file
        self.sections: dict[str, dict[str, Any]] = {}
        for name, value in data.items():
            if name not in SCHEMA:
                raise self.error(name, _unknown_hint(name, tuple(SCHEMA), section=None))
            if not isinstance(value, dict):
                raise self.error(name, f"expected a table [{name}], got {_type_name(value)}")
            for key in value:
                if key not in SCHEMA[name]:
                    hint = _unknown_hint(key, SCHEMA[name], section=name)
                    raise self.error(f"{name}.{key}", hint)
            self.sections[name] = value

    def error(self, key: str, msg: str) -> ConfigError:
        return ConfigError(msg, file=self.file, key=key)

    def string(self, section: str, key: str, *, required: bool = False) -> str | None:
        value = self.sections.get(section, {}).get(key)
        if value is None:
            if required:
                raise self.error(f"{section}.{key}", f"missing; add it under [{section}]")
            return None
        if not isinstance(value, str):
            raise self.error(f"{section}.{key}", f"expected a string, got {_type_name(value)}")
        return value

    def string_list(self, section: str, key: str) -> list[str]:
        value = self.sections.get(section, {}).get(key, [])
        if not isinstance(value, list):
            raise self.error(
                f"{section}.{key}", f"expected an array of strings, got {_type_name(value)}"
            )
        for i, item in enumerate(value, start=1):
            if not isinstance(item, str):
                raise self.error(
                    f"{section}.{key}", f"item {i}: expected a string, got {_type_name(item)}"
                )
        return list(value)


def _unknown_hint(key: str, valid: tuple[str, ...], *, section: str | None) -> str:
    close = closest(key, valid)
    if close:
        return f"unknown key; did you mean {close!r}?"
    if section is not None:
        for other, keys in SCHEMA.items():
            if key in keys:
                return f"unknown key here; it belongs under [{other}]"
    return "unknown key; valid keys: " + ", ".join(repr(k) for k in valid)


def _check_url(r: _Reader, url: str) -> str:
    url = url.strip().rstrip("/")
    bad = r.error("homeserver.url", f"expected an http:// or https:// URL, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if parts.query or parts.fragment or parts.username or parts.password:
        raise r.error("homeserver.url", "expected a plain base URL without user, query or #")
    if url.lower() in _SAMPLE_URLS:
        raise r.error(
            "homeserver.url", f"{url!r} is the example's sample value; set your homeserver's URL"
        )
    return url


def _check_user_id(r: _Reader, user_id: str) -> None:
    m = _USER_ID_RE.fullmatch(user_id)
    if not m or not _SERVER_RE.fullmatch(m["server"]) or len(user_id) > 255:
        raise r.error("bot.user_id", f"expected @localpart:server, got {user_id!r}")
    if user_id.lower() in _SAMPLE_USER_IDS:
        raise r.error(
            "bot.user_id", f"{user_id!r} is the example's sample value; set the bot's account"
        )


def _check_room_id(r: _Reader, room: str) -> None:
    if room.lower() in _SAMPLE_ROOMS:
        raise r.error(
            "bridge.supervisors_room",
            f"{room!r} is the example's sample value; set the room ID of your supervisors' "
            "room, or delete the line",
        )
    m = _ROOM_ID_RE.fullmatch(room)
    if not m or (m["server"] is not None and not _SERVER_RE.fullmatch(m["server"])):
        raise r.error(
            "bridge.supervisors_room",
            f"expected a room ID like '!abc123:server' (Room settings > Advanced), got {room!r}",
        )


def _check_servers(r: _Reader, servers: list[str]) -> tuple[str, ...]:
    seen: list[str] = []
    for i, server in enumerate(servers, start=1):
        if server != ANY_SERVER and not _SERVER_RE.fullmatch(server):
            raise r.error(
                "bridge.allowed_servers",
                f"item {i}: expected a server name like 'matrix.org', got {server!r}",
            )
        if server not in seen:
            seen.append(server)
    return tuple(seen)


def _path(r: _Reader, key: str, value: str, base: Path) -> Path:
    if not value.strip() or "\0" in value:
        raise r.error(key, "expected a folder path")
    return Path(os.path.normpath(base / Path(value).expanduser()))


def _warn_if_exposed(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "%s holds the bot password and is readable by others; run: chmod 600 %s", path, path
        )


# ---------------------------------------------------------------- writing


def _toml_str(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _rel(p: Path, base: Path) -> str:
    """``p`` relative to the config folder when inside it, so the folder can move."""
    p = Path(os.path.normpath(p.absolute()))
    try:
        return p.relative_to(base).as_posix() or "."
    except ValueError:
        return str(p)


def _render(cfg: BridgeConfig, base: Path) -> str:
    lines = [
        "# e2ecounsel bridge configuration, written by `e2ecounsel up`.",
        "# The bot's password is here only until its first sign-in: the bridge then keeps",
        "# its own session (in the data dir) and `up` removes the password. Keep this file",
        "# private (chmod 600).",
        "",
        "[homeserver]",
        f"url = {_toml_str(cfg.homeserver_url)}",
        "",
        "[bot]",
        f"user_id = {_toml_str(cfg.bot_user_id)}",
    ]
    if cfg.bot_password is not None:
        lines.append(f"password = {_toml_str(cfg.bot_password)}")
    lines += [
        f"device_name = {_toml_str(cfg.device_name)}",
        "",
        "[paths]",
        f"data_dir = {_toml_str(_rel(cfg.data_dir, base))}",
    ]
    if cfg.policies_dir is not None:
        lines.append(f"policies_dir = {_toml_str(_rel(cfg.policies_dir, base))}")
    if isinstance(cfg.database, Path):
        lines.append(f"database = {_toml_str(_rel(cfg.database, base))}")
    elif cfg.database is not None:
        lines.append(f"database = {_toml_str(cfg.database)}")
    lines += ["", "[bridge]"]
    if cfg.supervisors_room is not None:
        lines.append(f"supervisors_room = {_toml_str(cfg.supervisors_room)}")
    servers = ", ".join(_toml_str(s) for s in cfg.allowed_servers)
    lines += [
        f"allowed_servers = [{servers}]",
        "",
        "[logging]",
        f"level = {_toml_str(cfg.log_level)}",
        "",
    ]
    return "\n".join(lines)
