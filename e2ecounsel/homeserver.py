"""The embedded homeserver: a local Synapse that e2ecounsel configures, starts, checks and stops.

The one-machine setup needs a homeserver, and asking an operator to hand-write a Synapse
configuration before trying the service is a high bar. This module writes a small, commented
configuration once (SQLite, loopback only, no federation, token-gated registration, rate limits
raised for a busy bot), then runs Synapse as a child process and waits until it answers.

Layout under ``DIR/synapse`` (``DIR`` is the e2ecounsel data directory)::

    homeserver.yaml        the Synapse configuration (no secrets in it)
    log.config             Synapse's logging setup (rotating file, INFO)
    homeserver.log         Synapse's own log
    console.log            Synapse's stdout/stderr of the latest start (start-up errors land here)
    homeserver.db          the SQLite database
    media_store/           uploaded (encrypted) media
    <server>.signing.key   the server's signing key
    secrets/               registration shared secret, macaroon and form secrets (0600)
    admin.json             the internal admin account that manages registration tokens (0600)

Registration tokens live in Synapse's database and can only be managed through its admin API,
through an internal admin account registered with the shared secret. Each token has a use count
and an expiry; none is stored on disk. The admin account keeps no access token: every admin call
signs in, does its work and signs out again, so no long-lived admin token exists anywhere.

Synapse mounts its admin API (``/_synapse/admin``) with every client API listener. The client
listener here replaces that path with a 404 (``e2ecounsel.synapse_side``); a second listener,
loopback only and never to be exposed, serves the admin API to e2ecounsel's own tools. Both
bind to 127.0.0.1; a reverse proxy in front forwards to the client listener only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import signal
import socket
import string
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final
from urllib.parse import quote

import aiohttp
import nacl.signing
import yaml

from e2ecounsel.errors import HomeserverError

log = logging.getLogger(__name__)
#: What the registration tokens we create are made of (see create_registration_token).
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits

DEFAULT_PORT: Final = 8008
MIN_PASSWORD_LENGTH: Final = 10
HOST: Final = "127.0.0.1"
_CONFIG_NAME: Final = "homeserver.yaml"
_DB_NAME: Final = "homeserver.db"
_CONSOLE_LOG: Final = "console.log"
_ADMIN_FILE: Final = "admin.json"
_ADMIN_LOCALPART: Final = "e2ecounsel-admin"
_SECRETS: Final = ("registration_shared_secret", "macaroon_secret_key", "form_secret")
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_INSTALL_HINT: Final = "install the `local` extra: pip install 'e2ecounsel[local]'"

# Run Synapse through a tiny launcher rather than `-m`: on Linux it asks the kernel to send
# SIGTERM to Synapse when our process dies, so a crashed or killed parent never leaves an orphan
# holding the port. `{parent}` is our pid, checked after the prctl call to close the race where
# the parent died before the request was made.
_LAUNCHER: Final = """\
import os, runpy, signal, sys
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != {parent}:
        sys.exit("parent process is gone")
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it, so parallel test runs do not collide; another process could still
    take it before Synapse binds, which start() then reports as "port in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something already listens on ``host:port``.

    Binds with SO_REUSEADDR like Twisted does, so sockets lingering in TIME_WAIT after a
    previous run do not count as "in use" (they would not stop Synapse either).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
        return False


@dataclass(frozen=True)
class HomeserverInfo:
    """What a client needs to reach the embedded homeserver, and where it keeps its files."""

    base_url: str
    server_name: str
    data_dir: Path
    admin_url: str
    """Where the admin API answers: a second loopback listener, never to be exposed."""
    behind_proxy: bool = False


@dataclass(frozen=True)
class RegistrationToken:
    """A registration token as Synapse keeps it: how often it may still be used, and until when."""

    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_ms: int | None

    def valid(self, now_ms: int) -> bool:
        """Whether someone could still sign up with it."""
        if self.expiry_ms is not None and self.expiry_ms <= now_ms:
            return False
        return self.uses_allowed is None or self.pending + self.completed < self.uses_allowed


class UserExistsError(HomeserverError):
    """The account to register exists already; callers that only need it to exist catch this."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        super().__init__(f"the account {user_id} already exists on the homeserver")


class EmbeddedHomeserver:
    """A local Synapse owned by this process: configured once, started and stopped on demand."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        server_name: str | None = None,
        bcrypt_rounds: int = 12,
        behind_proxy: bool = False,
    ) -> None:
        """Prepare (but do not touch the disk or start anything).

        ``port`` None means the port saved in an existing configuration, else 8008; an explicit
        port is written into the configuration. ``server_name`` None means the saved name, else
        "localhost"; it cannot change once the database exists (user ids embed it).
        ``bcrypt_rounds`` only applies when the configuration is first written; tests lower it
        because password hashing dominates account creation time. ``behind_proxy`` says a
        reverse proxy is in front: only then does Synapse trust ``X-Forwarded-For`` (checked and
        written into the configuration at every start, so it follows what the operator says).
        """
        self._root = Path(data_dir) / "synapse"
        self._requested_port = port
        self._requested_server_name = server_name
        self._bcrypt_rounds = bcrypt_rounds
        self._behind_proxy = behind_proxy
        self._info: HomeserverInfo | None = None
        self._shared_secret: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._console: IO[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._db_path: Path | None = None
        self.startup_seconds: float | None = None
        """Seconds the latest start() took until Synapse answered, for operators and tests."""

    # -- paths -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self._root / _CONFIG_NAME

    @property
    def log_path(self) -> Path:
        """Synapse's own log: where to look when something goes wrong."""
        return self._root / "homeserver.log"

    @property
    def console_log_path(self) -> Path:
        return self._root / _CONSOLE_LOG

    # -- state ---------------------------------------------------------------------------------

    @property
    def info(self) -> HomeserverInfo:
        """Connection details; ensure_config() (or start()) must have run."""
        if self._info is None:
            raise HomeserverError("the embedded homeserver is not configured yet; call start()")
        return self._info

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    # -- configuration -------------------------------------------------------------------------

    def ensure_config(self) -> HomeserverInfo:
        """Write the configuration and secrets on first run; load and check them afterwards.

        Idempotent: secrets are created once and reused, so a restart keeps every account,
        token and room. Raises HomeserverError naming the file
        when something on disk is unreadable.
        """
        try:
            self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self._root / "secrets").mkdir(exist_ok=True, mode=0o700)
            (self._root / "media_store").mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise HomeserverError(
                f"cannot create {self._root}: {exc.strerror}; check its permissions"
            ) from exc

        for name in _SECRETS:
            self._ensure_secret_file(self._root / "secrets" / name, lambda: secrets.token_hex(32))
        self._shared_secret = self._read_text(self._root / "secrets" / _SECRETS[0]).strip()

        config: Mapping[str, Any] = {}
        if self.config_path.exists():
            server_name, port, config = self._load_existing_config()
            self._apply_behind_proxy()
            # A configuration of an older version has one listener, serving the admin API too.
            admin_port = _listener_port(config, 1) or port
        else:
            server_name = self._requested_server_name or "localhost"
            port = self._requested_port or DEFAULT_PORT
            admin_port = free_port()
            self._write_text(self._root / "log.config", self._render_log_config(), mode=0o600)
            self._write_text(
                self.config_path, self._render_config(server_name, port, admin_port), mode=0o600
            )
            log.info("Wrote a new homeserver configuration to %s", self.config_path)

        if not (self._root / "log.config").exists():
            self._write_text(self._root / "log.config", self._render_log_config(), mode=0o600)
        self._ensure_signing_key(
            self._configured_path(config.get("signing_key_path"))
            or self._signing_key_path(server_name)
        )
        database = config.get("database")
        args = database.get("args") if isinstance(database, dict) else None
        if isinstance(database, dict) and database.get("name", "sqlite3") == "sqlite3":
            db_path = args.get("database") if isinstance(args, dict) else None
            self._db_path = self._configured_path(db_path) or self._root / _DB_NAME
        elif database is None:
            self._db_path = self._root / _DB_NAME
        else:
            self._db_path = None

        self._info = HomeserverInfo(
            base_url=f"http://{HOST}:{port}",
            server_name=server_name,
            data_dir=self._root,
            admin_url=f"http://{HOST}:{admin_port}",
            behind_proxy=self._behind_proxy,
        )
        return self._info

    def _configured_path(self, value: object) -> Path | None:
        """A path from homeserver.yaml, resolved like Synapse does (it runs from our root)."""
        if not isinstance(value, str) or not value:
            return None
        return self._root / value

    def _load_existing_config(self) -> tuple[str, int, Mapping[str, Any]]:
        """Read server name and port from homeserver.yaml, applying an explicitly asked port."""
        path = self.config_path
        text = self._read_text(path)
        config = self._parse_config(text)
        server_name = config.get("server_name")
        if not isinstance(server_name, str) or not server_name:
            raise self._corrupt(path, "it has no valid `server_name`")
        port = _listener_port(config)
        if port is None:
            raise self._corrupt(path, "it has no valid `listeners` entry with a `port`")
        if self._requested_server_name and self._requested_server_name != server_name:
            raise HomeserverError(
                f"the homeserver in {self._root} is set up for server name {server_name!r}, "
                f"not {self._requested_server_name!r}; server names cannot change after the "
                "first start (use another data directory for a new server)"
            )
        if self._requested_port is not None and self._requested_port != port:
            text = _replace_port(text, old=port, new=self._requested_port)
            if _listener_port(self._parse_config(text)) != self._requested_port:
                raise HomeserverError(
                    f"cannot change the port in {path} automatically; edit `listeners: port` "
                    "and `public_baseurl` there by hand"
                )
            self._write_text(path, text, mode=0o600)
            log.info("Homeserver port changed from %s to %s", port, self._requested_port)
            port = self._requested_port
        return server_name, port, config

    def _apply_behind_proxy(self) -> None:
        """Make `x_forwarded` in homeserver.yaml say what ``behind_proxy`` says.

        With it on, Synapse takes the client address from ``X-Forwarded-For``, which anyone can
        forge when no proxy sits in front: rate limits and logs would then name whatever address
        a client claims.
        """
        path = self.config_path
        text = self._read_text(path)
        want = "true" if self._behind_proxy else "false"
        changed = re.sub(r"(?m)^(\s*x_forwarded:\s*)(?:true|false)\b", rf"\g<1>{want}", text)
        if changed != text:
            self._write_text(path, changed, mode=0o600)
            log.info("Homeserver x_forwarded set to %s", want)

    def _parse_config(self, text: str) -> Mapping[str, Any]:
        path = self.config_path
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise self._corrupt(path, f"it is not valid YAML{where}") from exc
        if not isinstance(config, dict):
            raise self._corrupt(path, "it does not hold a YAML mapping")
        return config

    def _corrupt(self, path: Path, why: str) -> HomeserverError:
        return HomeserverError(
            f"{path} is unusable: {why}; fix it, or move {self._root} away to start a fresh "
            "homeserver (accounts and rooms in it will then be gone)"
        )

    def _signing_key_path(self, server_name: str) -> Path:
        return self._root / f"{server_name}.signing.key"

    def _ensure_signing_key(self, path: Path) -> None:
        """Create the signing key if missing; refuse a key file Synapse could not read.

        A lost key is simply replaced: this server does not federate, so no other server
        holds signatures made with the old one.
        """
        if not path.exists():
            key = nacl.signing.SigningKey.generate()
            key_id = "a_" + secrets.token_urlsafe(3).replace("-", "x").replace("_", "y")
            seed = base64.b64encode(bytes(key)).decode("ascii").rstrip("=")
            self._write_text(path, f"ed25519 {key_id} {seed}\n", mode=0o600)
            log.info("Generated a new homeserver signing key at %s", path)
            return
        lines = [line for line in self._read_text(path).splitlines() if line.strip()]
        for line in lines:
            parts = line.split()
            if len(parts) != 3 or parts[0] != "ed25519" or not _is_seed(parts[2]):
                break
        else:
            if lines:
                return
        raise self._corrupt(path, "it is not a Synapse signing key (delete it to make a new one)")

    def _ensure_secret_file(self, path: Path, make: Callable[[], str]) -> str:
        if path.exists():
            value = self._read_text(path).strip()
            if value:
                return value
            log.warning("Secret file %s was empty; writing a new value", path)
        value = make()
        self._write_text(path, value + "\n", mode=0o600)
        return value

    def _read_text(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise self._corrupt(path, "it is not a text file") from exc
        except OSError as exc:
            raise HomeserverError(f"cannot read {path}: {exc.strerror}") from exc

    @staticmethod
    def _write_text(path: Path, text: str, *, mode: int) -> None:
        """Write atomically with the given permissions, so a crash never leaves half a file."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as exc:
            raise HomeserverError(f"cannot write {path}: {exc.strerror}") from exc

    def _render_config(self, server_name: str, port: int, admin_port: int) -> str:
        def q(value: object) -> str:
            # JSON strings are valid YAML double-quoted scalars: paths with spaces stay intact.
            return json.dumps(str(value))

        return _CONFIG_TEMPLATE.format(
            server_name=q(server_name),
            public_baseurl=q(f"http://{HOST}:{port}/"),
            host=q(HOST),
            port=port,
            admin_port=admin_port,
            database=q(_DB_NAME),
            log_config=q("log.config"),
            media_store=q("media_store"),
            signing_key=q(self._signing_key_path(server_name).name),
            registration_shared_secret=q("secrets/registration_shared_secret"),
            macaroon_secret_key=q("secrets/macaroon_secret_key"),
            form_secret=q("secrets/form_secret"),
            bcrypt_rounds=int(self._bcrypt_rounds),
            x_forwarded="true" if self._behind_proxy else "false",
            min_password_length=MIN_PASSWORD_LENGTH,
        )

    def _render_log_config(self) -> str:
        return _LOG_CONFIG_TEMPLATE.format(log_file=json.dumps(self.log_path.name))

    # -- process -------------------------------------------------------------------------------

    async def start(self, *, timeout: float = 90.0) -> None:  # noqa: ASYNC109 (public API)
        """Start Synapse and return once its client API answers.

        Raises HomeserverError with one clear line when Synapse is not installed, the port is
        taken, a file in the data directory is damaged, or Synapse exits or hangs at start-up.
        """
        if self.running:
            return
        if importlib.util.find_spec("synapse") is None:
            raise HomeserverError(f"Synapse is not installed; {_INSTALL_HINT}")
        info = await asyncio.to_thread(self._prepare_start)
        started = time.monotonic()
        self._console = await asyncio.to_thread(self.console_log_path.open, "wb")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _LAUNCHER.format(parent=os.getpid()),
                "--config-path",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=self._console,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(self._root),
                env=_synapse_environment(),
            )
        except OSError as exc:
            self._close_console()
            raise HomeserverError(f"cannot start Synapse: {exc.strerror}") from exc
        log.info("Starting Synapse (pid %s) on %s", self._proc.pid, info.base_url)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            await self._wait_until_healthy(timeout)
            self.startup_seconds = time.monotonic() - started
            log.info("Synapse answers on %s after %.1f s", info.base_url, self.startup_seconds)
        except BaseException:
            await self.stop()
            raise

    def _prepare_start(self) -> HomeserverInfo:
        info = self.ensure_config()
        port = int(info.base_url.rsplit(":", 1)[1])
        try:
            taken = port_in_use(port)
        except OSError as exc:
            raise HomeserverError(
                f"cannot use port {port} on {HOST}: {exc.strerror}; pass --port N"
            ) from exc
        if taken:
            raise HomeserverError(
                f"port {port} on {HOST} is already in use; stop what uses it or pass --port N"
            )
        admin_port = int(info.admin_url.rsplit(":", 1)[1])
        if admin_port != port and port_in_use(admin_port):
            raise HomeserverError(
                f"port {admin_port} on {HOST} (the admin listener) is already in use; stop what "
                f"uses it, or change the second `port:` in {self.config_path}"
            )
        db = self._db_path
        if db is not None and db.exists() and db.stat().st_size > 0:
            with db.open("rb") as fh:
                header = fh.read(len(_SQLITE_MAGIC))
            if header != _SQLITE_MAGIC:
                raise self._corrupt(db, "it is not an SQLite database")
        return info

    async def _wait_until_healthy(self, limit: float) -> None:
        assert self._proc is not None and self._http is not None
        url = f"{self.info.base_url}/_matrix/client/versions"
        deadline = time.monotonic() + limit
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            while True:
                if exited.done():
                    raise HomeserverError(await asyncio.to_thread(self._exit_summary))
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise HomeserverError(
                        f"Synapse did not answer on {self.info.base_url} within {limit:.0f} s; "
                        f"see {self.log_path}"
                    )
                # Waiting on the exit future doubles as the poll interval and notices a crash
                # at once instead of after the next failed request.
                await asyncio.wait({exited}, timeout=0.1)
        finally:
            if not exited.done():
                exited.cancel()

    def _exit_summary(self) -> str:
        """Turn the tail of Synapse's output into one sentence for the operator."""
        assert self._proc is not None
        lines: list[str] = []
        for path in (self.console_log_path, self.log_path):
            with contextlib.suppress(OSError):
                lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines()[-60:])
        if any("Address already in use" in line for line in lines):
            # Something grabbed the port between our check and Synapse's bind.
            port = self.info.base_url.rsplit(":", 1)[1]
            return f"port {port} on {HOST} is already in use; stop what uses it or pass --port N"
        reason = _summarise(lines).rstrip(".")
        return (
            f"Synapse stopped during start-up (exit code {self._proc.returncode}): {reason}; "
            f"details in {self.console_log_path}"
        )

    async def stop(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (public API)
        """Stop Synapse: SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "Synapse (pid %s) ignored SIGTERM for %.0f s; killing it", proc.pid, timeout
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            log.info("Synapse (pid %s) stopped", proc.pid)
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._close_console()

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    async def __aenter__(self) -> EmbeddedHomeserver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def is_healthy(self) -> bool:
        """Whether a homeserver answers on our configured address, whoever started it."""
        if self._info is None:
            await asyncio.to_thread(self.ensure_config)
        http, base = self._client()
        try:
            status, _ = await _request(http, "GET", f"{base}/_matrix/client/versions")
        except HomeserverError:
            return False
        return status == 200

    # -- accounts --------------------------------------------------------------------------------

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> str:
        """Create an account through the shared-secret admin API and return its user id.

        This path skips the registration token on purpose: it is how the operator's tooling
        creates the bot and counselor accounts. It also works when another process started
        Synapse from the same data directory. Raises UserExistsError (a HomeserverError) when
        the account exists already.
        """
        if self._info is None:
            await asyncio.to_thread(self.ensure_config)
        body = await self._shared_secret_register(localpart, password, admin=admin)
        user_id = body.get("user_id")
        if not isinstance(user_id, str):
            raise HomeserverError("the homeserver did not return the new account's id")
        log.info("Registered account %s (admin=%s)", user_id, admin)
        return user_id

    async def _shared_secret_register(
        self, localpart: str, password: str, *, admin: bool
    ) -> dict[str, Any]:
        http, base = self._client(admin=True)
        if self._shared_secret is None:
            raise HomeserverError("the embedded homeserver is not configured yet; call start()")
        url = f"{base}/_synapse/admin/v1/register"
        status, body = await _request(http, "GET", url)
        nonce = body.get("nonce")
        if status != 200 or not isinstance(nonce, str):
            raise HomeserverError(
                "the homeserver refused to hand out a registration nonce: "
                + _describe(status, body)
            )
        mac = hmac.new(self._shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode("utf-8"))
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        payload = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        status, body = await _request(http, "POST", url, json_body=payload)
        if status == 200:
            return body
        if body.get("errcode") == "M_USER_IN_USE":
            raise UserExistsError(f"@{localpart}:{self.info.server_name}")
        raise HomeserverError(
            f"the homeserver refused to create the account: {_describe(status, body)}"
        )

    def _client(self, *, admin: bool = False) -> tuple[aiohttp.ClientSession | None, str]:
        """Our session while we run Synapse; None (a one-shot session per request) otherwise.

        The latter serves a Synapse started by another process from the same data directory,
        e.g. `e2ecounsel user add` while `e2ecounsel up` runs. ``admin`` picks the listener
        that serves the admin API.
        """
        http = self._http if self.running else None
        return http, self.info.admin_url if admin else self.info.base_url

    # -- registration tokens and accounts, through the admin API ------------------------------

    async def create_registration_token(
        self, *, uses: int, expires_ms: int, length: int = 24
    ) -> RegistrationToken:
        """A new random token valid for ``uses`` sign-ups until ``expires_ms`` (Unix ms).

        Letters and digits only (24 by default: 142 bits). Synapse's own tokens may hold
        ``-``, ``.``, ``_`` and ``~``: hard to read out or type on a phone, and one that
        starts with ``-`` reads as an option on a command line.
        """
        if uses < 1:
            raise HomeserverError("a registration token needs at least one use")
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))
        body = await self.admin_call(
            "POST",
            "/_synapse/admin/v1/registration_tokens/new",
            json_body={"token": token, "uses_allowed": uses, "expiry_time": expires_ms},
            what="create a registration token",
        )
        log.info("Created a registration token (%s uses)", uses)
        return _token_from(body)

    async def registration_tokens(self) -> list[RegistrationToken]:
        """Every registration token Synapse knows, valid or not, oldest first."""
        body = await self.admin_call(
            "GET", "/_synapse/admin/v1/registration_tokens", what="list registration tokens"
        )
        tokens = body.get("registration_tokens")
        if not isinstance(tokens, list):
            raise HomeserverError("the homeserver did not return its registration tokens")
        return [_token_from(t) for t in tokens if isinstance(t, dict)]

    async def revoke_registration_token(self, token: str) -> bool:
        """Delete ``token``; False when there is no such token."""
        try:
            await self.admin_call(
                "DELETE",
                f"/_synapse/admin/v1/registration_tokens/{quote(token, safe='')}",
                what="revoke the registration token",
            )
        except _NotFound:
            return False
        log.info("Revoked a registration token")
        return True

    async def account_state(self, user_id: str) -> str | None:
        """``"active"``, ``"deactivated"``, or None when the account does not exist here."""
        try:
            body = await self.admin_call(
                "GET",
                f"/_synapse/admin/v2/users/{quote(user_id, safe='')}",
                what="look the account up",
            )
        except _NotFound:
            return None
        return "deactivated" if body.get("deactivated") else "active"

    async def admin_call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json_body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One admin (or client) API request as the internal admin account, signed in for just
        this call (see the module docstring). Raises HomeserverError unless the answer is 200."""
        if self._info is None:
            await asyncio.to_thread(self.ensure_config)
        http, base = self._client(admin=True)
        access_token = await self._admin_login()
        headers = {"Authorization": f"Bearer {access_token}"}
        try:
            status, body = await _request(
                http, method, f"{base}{path}", headers=headers, json_body=json_body
            )
        finally:
            await self._logout(access_token)
        if status == 200:
            return body
        if status == 404 and body.get("errcode") == "M_NOT_FOUND":
            raise _NotFound(what)
        raise HomeserverError(f"cannot {what}: {_describe(status, body)}")

    async def _admin_login(self) -> str:
        """Sign the internal admin account in and return a fresh access token.

        The account is created on first use; its credentials stay in a 0600 file next to the
        other secrets. Whoever can read that file can also read the registration shared
        secret beside it (which mints admin accounts), so the file adds no new power; what it
        no longer holds is a token that never expires.
        """
        http, base = self._client(admin=True)
        path = self._root / _ADMIN_FILE
        saved = await asyncio.to_thread(self._load_admin, path)
        if saved is None:
            saved = await self._create_admin(path)
        elif "access_token" in saved:
            # Written by an older version: that token never expires. Sign it out, forget it.
            await self._logout(saved.pop("access_token"))
            await asyncio.to_thread(self._save_admin, path, saved)
            log.info("Signed out the saved admin token of an older version")
        status, body = await _request(
            http,
            "POST",
            f"{base}/_matrix/client/v3/login",
            json_body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": saved["user_id"]},
                "password": saved["password"],
                "initial_device_display_name": "e2ecounsel homeserver management",
            },
        )
        token = body.get("access_token")
        if status != 200 or not isinstance(token, str):
            raise HomeserverError(
                f"the internal admin account in {path} cannot log in: "
                f"{_describe(status, body)}; delete that file and start again"
            )
        return token

    async def _create_admin(self, path: Path) -> dict[str, str]:
        password = secrets.token_urlsafe(32)
        localpart = _ADMIN_LOCALPART
        for _ in range(3):
            try:
                body = await self._shared_secret_register(localpart, password, admin=True)
                break
            except UserExistsError:
                # The credentials file was lost; the old account stays, unused.
                localpart = f"{_ADMIN_LOCALPART}-{secrets.token_hex(3)}"
        else:
            raise HomeserverError("cannot create the internal admin account on the homeserver")
        creds = {"user_id": str(body["user_id"]), "password": password}
        await asyncio.to_thread(self._save_admin, path, creds)
        access_token = body.get("access_token")
        if isinstance(access_token, str):
            # Registration signs the account in; that session is not needed.
            await self._logout(access_token)
        return creds

    async def _logout(self, access_token: str) -> None:
        """End the session of ``access_token`` (and delete its device); a failure only logs."""
        http, base = self._client(admin=True)
        try:
            await _request(
                http,
                "POST",
                f"{base}/_matrix/client/v3/logout",
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except HomeserverError:
            log.warning("Could not sign out an admin session; it stays valid until revoked")

    def _load_admin(self, path: Path) -> dict[str, str] | None:
        if not path.exists():
            return None
        try:
            data = json.loads(self._read_text(path))
        except json.JSONDecodeError as exc:
            raise self._corrupt(path, "it is not valid JSON (delete it to make a new one)") from exc
        keys = ("user_id", "password")
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in keys):
            raise self._corrupt(
                path, "it lacks the admin credentials (delete it to make a new one)"
            )
        return {k: data[k] for k in (*keys, "access_token") if isinstance(data.get(k), str)}

    def _save_admin(self, path: Path, creds: Mapping[str, str]) -> None:
        self._write_text(path, json.dumps(dict(creds), indent=2) + "\n", mode=0o600)


class _NotFound(HomeserverError):
    """The admin API answered M_NOT_FOUND."""


def _token_from(body: Mapping[str, Any]) -> RegistrationToken:
    token = body.get("token")
    if not isinstance(token, str):
        raise HomeserverError("the homeserver returned a registration token without its value")

    def number(key: str) -> int | None:
        value = body.get(key)
        return value if isinstance(value, int) else None

    return RegistrationToken(
        token=token,
        uses_allowed=number("uses_allowed"),
        pending=number("pending") or 0,
        completed=number("completed") or 0,
        expiry_ms=number("expiry_time"),
    )


def _synapse_environment() -> dict[str, str]:
    """Synapse's environment: ours, with a version string that names no commit.

    Synapse asks git for the branch and commit of the folder it is installed in, which in a
    virtualenv inside a checkout is the checkout's, and shows it on
    ``/_synapse/admin/v1/server_version``, in the federation version and in its logs.
    """
    env = dict(os.environ)
    try:
        version = importlib.metadata.version("matrix-synapse")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    env["SYNAPSE_VERSION_STRING"] = version
    return env


# -- helpers -----------------------------------------------------------------------------------


async def lookup_profile(base_url: str, user_id: str, *, token: str | None = None) -> bool | None:
    """Whether ``user_id`` has a profile on the homeserver at ``base_url``; None if it won't say.

    ``GET /_matrix/client/v3/profile/{userId}``: 200 means the account exists, 404 that it does
    not. Servers that limit profile look-ups answer 401 or 403 for both, hence None.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    url = f"{base_url.rstrip('/')}/_matrix/client/v3/profile/{quote(user_id, safe='')}"
    status, _ = await _request(None, "GET", url, headers=headers)
    if status == 200:
        return True
    if status == 404:
        return False
    return None


async def _request(
    http: aiohttp.ClientSession | None,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One JSON request; connection problems become a HomeserverError, not an aiohttp error."""
    if http is None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as own:
            return await _request(own, method, url, headers=headers, json_body=json_body)
    try:
        async with http.request(method, url, headers=headers, json=json_body) as resp:
            try:
                body = await resp.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                body = {}
            return resp.status, body if isinstance(body, dict) else {}
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise HomeserverError(f"cannot reach the homeserver: {type(exc).__name__}") from exc


async def request_json(method: str, url: str) -> tuple[int, dict[str, Any]]:
    """One JSON request on a session of its own; HomeserverError when nothing answers."""
    return await _request(None, method, url)


def _describe(status: int, body: Mapping[str, Any]) -> str:
    errcode = body.get("errcode") or f"HTTP {status}"
    error = body.get("error")
    return f"{errcode} ({error})" if error else str(errcode)


def _listener_port(config: Mapping[str, Any], index: int = 0) -> int | None:
    listeners = config.get("listeners")
    if not isinstance(listeners, list) or len(listeners) <= index:
        return None
    if not isinstance(listeners[index], dict):
        return None
    port = listeners[index].get("port")
    return port if isinstance(port, int) and 0 < port < 65536 else None


def _replace_port(text: str, *, old: int, new: int) -> str:
    """Change the listener port and public_baseurl in place, keeping comments and edits."""
    text = re.sub(rf"(?m)^(\s*-?\s*port:\s*){old}\b", rf"\g<1>{new}", text, count=1)
    return re.sub(
        rf"(?m)^(public_baseurl:\s*\"?https?://[^:/\"]+:){old}\b", rf"\g<1>{new}", text, count=1
    )


def _is_seed(text: str) -> bool:
    try:
        return len(base64.b64decode(text + "=" * (-len(text) % 4), validate=True)) == 32
    except ValueError:
        return False


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Failure)\b:?\s*(.*)$")


def _summarise(lines: list[str]) -> str:
    """Pick the line that explains a failed start from Synapse's output."""
    cleaned = [line.strip() for line in lines if line.strip()]
    for i, line in enumerate(cleaned):
        if line.startswith("Error in configuration"):
            detail = cleaned[i + 1] if i + 1 < len(cleaned) else ""
            return _shorten(f"{line.rstrip(':')}: {detail}" if detail else line)
    for line in reversed(cleaned):
        if _EXCEPTION_LINE.match(line):
            return _shorten(line)
    return _shorten(cleaned[-1]) if cleaned else "it printed nothing"


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_CONFIG_TEMPLATE: Final = """\
# Synapse configuration for the e2ecounsel embedded homeserver.
#
# Written by e2ecounsel on first start and not rewritten afterwards, except for the listener
# port when another one is asked for (`--port`). Restart e2ecounsel after editing.
# Every option: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html
#
# Paths are relative to this directory: e2ecounsel starts Synapse from here, which keeps the
# data directory movable.

server_name: {server_name}
public_baseurl: {public_baseurl}
report_stats: false

# Loopback only. To serve clients elsewhere, put a TLS reverse proxy in front of this port.
listeners:
  - port: {port}
    bind_addresses: [{host}]
    type: http
    tls: false
    # Only behind a reverse proxy (`e2ecounsel up --behind-proxy`): otherwise a client could
    # claim any address in X-Forwarded-For. e2ecounsel rewrites this line at every start.
    x_forwarded: {x_forwarded}
    resources:
      - names: [client]
        compress: false
    # Synapse serves its admin API with the client API; this takes it off this listener.
    additional_resources:
      "/_synapse/admin":
        module: e2ecounsel.synapse_side.AdminApiNotServedHere
  # The admin API, for e2ecounsel's own tools (accounts, tokens, doctor). Loopback only; never
  # expose or proxy this port.
  - port: {admin_port}
    bind_addresses: [{host}]
    type: http
    tls: false
    resources:
      - names: [client]
        compress: false

database:
  name: sqlite3
  args:
    database: {database}

log_config: {log_config}
media_store_path: {media_store}
signing_key_path: {signing_key}

# Secrets live in separate files readable only by this account, not in this file.
registration_shared_secret_path: {registration_shared_secret}
macaroon_secret_key_path: {macaroon_secret_key}
form_secret_path: {form_secret}

# Anyone holding a valid registration token (`e2ecounsel token new --uses N --expires 7d`)
# may create an account; nobody else. Guests are not allowed.
enable_registration: true
registration_requires_token: true
allow_guest_access: false
bcrypt_rounds: {bcrypt_rounds}

# Passwords of at least 10 characters. No rules about character classes: length is what makes
# a password hard to guess, and class rules push people to predictable patterns ("Password1!")
# (NIST SP 800-63B, 5.1.1.2). Accounts made by the operator's tools get long random passwords.
password_config:
  policy:
    enabled: true
    minimum_length: {min_password_length}
    require_digit: false
    require_symbol: false
    require_lowercase: false
    require_uppercase: false

# No federation: this server neither talks to nor trusts any other server.
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true

# Privacy: no presence, no link previews (they would fetch URLs from messages), profiles only
# visible to people who share a room. e2ecounsel turns encryption on in the rooms it creates.
presence:
  enabled: false
url_preview_enabled: false
require_auth_for_profile_requests: true
limit_profile_requests_to_users_who_share_rooms: true
encryption_enabled_by_default_for_room_type: "off"
enable_metrics: false

# Rate limits, raised from Synapse's defaults: the bot creates a room per engagement, invites
# counselors into many rooms and sends digests and reminders in bursts. Lower them if this
# server is exposed to many untrusted accounts.
rc_message:
  per_second: 50
  burst_count: 500
rc_room_creation:
  per_second: 20
  burst_count: 500
rc_registration:
  per_second: 10
  burst_count: 100
rc_registration_token_validity:
  per_second: 1
  burst_count: 30
rc_login:
  address:
    per_second: 10
    burst_count: 100
  account:
    per_second: 10
    burst_count: 100
  failed_attempts:
    per_second: 1
    burst_count: 20
rc_joins:
  local:
    per_second: 50
    burst_count: 500
rc_joins_per_room:
  per_second: 50
  burst_count: 500
rc_invites:
  per_room:
    per_second: 50
    burst_count: 500
  per_user:
    per_second: 50
    burst_count: 500
  per_issuer:
    per_second: 50
    burst_count: 500
rc_key_requests:
  per_second: 100
  burst_count: 1000
rc_admin_redaction:
  per_second: 50
  burst_count: 500
rc_3pid_validation:
  per_second: 1
  burst_count: 10
rc_presence:
  per_user:
    per_second: 10
    burst_count: 100
rc_delayed_event_mgmt:
  per_second: 10
  burst_count: 100
"""

_LOG_CONFIG_TEMPLATE: Final = """\
# Logging for the e2ecounsel embedded homeserver (Python logging dictConfig schema).
# Rotating file, INFO level. Never raise synapse.storage.SQL to DEBUG: it logs access tokens.
# The `redact` filter keeps registration tokens out of the log (Synapse writes them at INFO
# for every sign-up); keep it on every handler you add.
version: 1

formatters:
  precise:
    format: "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"

filters:
  redact:
    (): e2ecounsel.synapse_side.RedactRegistrationTokens

handlers:
  file:
    class: logging.handlers.RotatingFileHandler
    formatter: precise
    filters: [redact]
    filename: {log_file}
    maxBytes: 10485760
    backupCount: 3
    encoding: utf8

loggers:
  synapse.storage.SQL:
    level: INFO

root:
  level: INFO
  handlers: [file]

disable_existing_loggers: false
"""
