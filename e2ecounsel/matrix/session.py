"""The E2EE Matrix session: the only place that drives matrix-nio.

What this adds on top of nio, and why:

* **Persistent identity.** The access token and device id are kept sealed in
  the data dir and restored on every start, and nio's crypto store gets a real
  pickle key derived from the sealing key. A restart therefore keeps the same
  device and every Olm/Megolm session: old messages stay readable.
* **Safe encrypted sends.** nio only refreshes device lists and claims
  one-time keys inside ``sync_forever``. :meth:`MatrixSession.send` makes sure
  of both itself before every encrypted send, so the first message to a new
  device is never undecryptable ("missing session"). Device lists are asked
  for only when they may have changed (``device_lists`` in the sync answer,
  new members), in one request shared by every send waiting for it; one-time
  keys are claimed under a lock per user, so sends to other people never wait.
* **Key upkeep off the send path.** Uploading one-time keys, looking up the
  devices a sync said changed and claiming keys for wedged sessions run in
  one background task after each sync, not in the sync loop and not in sends.
* **A sync loop that survives.** Connection errors and 5xx answers back off
  and retry; the loop resumes from the saved sync token. The token is saved
  only *after* the callbacks for a batch have run (nio saves it before), so a
  crash while handling a batch replays that batch instead of losing it.
* **Restart without a full-state sync** (``resume_lazily``). nio keeps rooms
  in memory only, so by default the first sync after a restart asks for the
  full state of every room. A lazy session resumes from the saved token with
  deltas only: nio's store already knows which rooms are encrypted, a room's
  state is fetched when it first shows activity or is sent to, and a room whose
  timeline came back ``limited`` (a gap) is back-filled from ``/messages`` up to
  the previous token, so no event is missed.
* **Callbacks never raise into the loop.** An exception in a nio callback
  ends ``sync``; every callback registered here is wrapped, and failures are
  logged with ids only, never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    Event,
    JoinedMembersError,
    KeysClaimError,
    KeysQueryError,
    KeysUploadError,
    LoginResponse,
    MatrixRoom,
    MessageDirection,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
    ToDeviceEvent,
    UnknownToDeviceEvent,
    WhoamiResponse,
)
from nio.store import DefaultStore

from e2ecounsel.errors import HomeserverUnreachable, MatrixError, SealingError
from e2ecounsel.matrix.crosssigning import CrossSigning, CrossSigningStatus
from e2ecounsel.matrix.trust import TrustPolicy
from e2ecounsel.sealing import Sealer

logger = logging.getLogger(__name__)

R = TypeVar("R")
EventHandler = Callable[[MatrixRoom, Any], Awaitable[None]]
ToDeviceHandler = Callable[[Any], Awaitable[None]]
BeforeEncrypt = Callable[[str], Awaitable[None]]

_LOGIN_FILE = "login.sealed"
_SYNC_TOKEN_FILE = "sync_token"
_LOGIN_CONTEXT = "matrix.login"
_BACKFILL_PAGES = 20  # of 100 events: a gap longer than that is logged, not chased

# Errors worth retrying: the homeserver is restarting, overloaded or away.
_RETRY_STATUS = {"M_LIMIT_EXCEEDED", "M_UNKNOWN"}
#: What no answer from the homeserver looks like (no connection, a time-out).
NO_ANSWER = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError)


class ConnectionState(enum.Enum):
    """What the sync loop is doing; the TUI shows it in its status line."""

    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StoredLogin:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str


def _is_transient(resp: ErrorResponse) -> bool:
    status = str(resp.status_code or "")
    if status in _RETRY_STATUS:
        return True
    transport = getattr(resp, "transport_response", None)
    code = getattr(transport, "status", 0) or 0
    return bool(code == 429 or code >= 500)


class _Client(AsyncClient):  # type: ignore[misc]  # nio ships no type hints
    """nio's client with a look at each sync answer *before* its callbacks run.

    nio marks changed device lists only after every event callback of the batch
    ran; a send started from a callback would not know yet that a device changed.
    A lazy session also completes the answer there (room state, gaps).
    """

    on_sync: Callable[[SyncResponse], Awaitable[None]] | None = None

    async def receive_response(self, response: Any) -> None:
        if (
            isinstance(response, SyncResponse)
            and self.on_sync is not None
            and response.next_batch != self.next_batch
        ):
            await self.on_sync(response)
        await super().receive_response(response)


class _Store(DefaultStore):  # type: ignore[misc]  # nio ships no type hints
    """nio's store, without a write transaction for nothing: nio saves the encrypted
    rooms of every sync answer, also when the answer names none (most answers), and
    each save binds every model and opens a transaction first."""

    def save_encrypted_rooms(self, rooms: set[str]) -> None:
        if rooms:
            super().save_encrypted_rooms(rooms)


def _own_join(info: Any, me: str) -> bool:
    """True if this sync batch has us joining the room (its state then comes with it)."""
    return any(
        isinstance(e, RoomMemberEvent)
        and e.state_key == me
        and e.membership == "join"
        and e.prev_membership != "join"
        for e in [*info.state, *info.timeline.events]
    )


def _membership_in(resp: SyncResponse, user_id: str) -> bool:
    """True if a joined room's state or timeline in this batch has ``user_id``'s
    membership as joined or invited (lazy-loaded member state included)."""
    return any(
        isinstance(e, RoomMemberEvent)
        and e.state_key == user_id
        and e.membership in ("join", "invite")
        for info in resp.rooms.join.values()
        for e in [*info.state, *info.timeline.events]
    )


def _joined_users(resp: SyncResponse) -> set[str]:
    """Users who joined or were invited to one of our rooms in this sync batch."""
    users: set[str] = set()
    for info in resp.rooms.join.values():
        for event in [*info.state, *info.timeline.events]:
            if isinstance(event, RoomMemberEvent) and event.membership in ("join", "invite"):
                if event.prev_membership != event.membership:
                    users.add(event.state_key)
    return users


def check(resp: Any, what: str) -> Any:
    """Turn a nio error response into :class:`MatrixError`; pass others through.

    Every nio call returns either a response or an error object. Calling
    ``check`` right after each call keeps that ``isinstance`` test in one place.
    """
    if isinstance(resp, ErrorResponse):
        transport = getattr(resp, "transport_response", None)
        raise MatrixError(
            f"{what} failed: {resp.status_code or 'error'} {getattr(resp, 'message', '')}".strip(),
            errcode=str(resp.status_code) if resp.status_code else None,
            status=getattr(transport, "status", None),
        )
    return resp


class MatrixSession:
    """One Matrix account on one persistent device, end-to-end encrypted.

    ``store_dir`` holds the sealed login, the sync token and nio's crypto store.
    The clock (``sleep``) is injectable so tests can drive back-off.
    ``resume_lazily``: restart without a full-state sync (see the module doc);
    ``client.rooms`` then holds only the rooms seen active or sent to.
    ``delta_filter``: the filter of incremental syncs (from a token, without full
    state), when it differs from ``sync_filter``, which the others use.
    """

    def __init__(
        self,
        homeserver: str,
        user_id: str,
        store_dir: Path,
        sealer: Sealer,
        *,
        device_name: str = "e2ecounsel",
        sync_filter: Mapping[str, Any] | None = None,
        delta_filter: Mapping[str, Any] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_backoff: float = 30.0,
        resume_lazily: bool = False,
    ) -> None:
        self.homeserver = homeserver.rstrip("/")
        self.user_id = user_id
        self.store_dir = store_dir
        self.sealer = sealer
        self.device_name = device_name
        self._sleep = sleep
        self._max_backoff = max_backoff
        self._sync_filter = dict(sync_filter) if sync_filter else None
        self._delta_filter = dict(delta_filter) if delta_filter else self._sync_filter
        self.resume_lazily = resume_lazily
        self._since: str | None = None  # the token of the sync under way
        self._room_loads: dict[str, asyncio.Task[MatrixRoom | None]] = {}
        store_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(store_dir, 0o700)
        config = AsyncClientConfig(
            store_sync_tokens=False,  # saved by us, after callbacks ran
            encryption_enabled=True,
            pickle_key=sealer.subkey("nio-pickle").hex(),
            max_timeouts=0,  # connection errors come to us; we own back-off
            max_limit_exceeded=None,
            request_timeout=60,
            store=_Store,
        )
        self.client = _Client(self.homeserver, user_id, store_path=str(store_dir), config=config)
        self.client.on_sync = self._on_sync_received
        self.state = ConnectionState.STARTING
        self.before_encrypt: list[BeforeEncrypt] = []
        self.state_listeners: list[Callable[[ConnectionState], None]] = []
        self._synced = asyncio.Event()
        self._stopping = asyncio.Event()
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._claim_locks: dict[str, asyncio.Lock] = {}
        self._nio_query: asyncio.Task[None] | None = None
        self._trust: TrustPolicy | None = None
        self._own_devices_changed = False
        # The sync token from which our own account's keys are to be checked (see
        # :meth:`use_trust`); None when no report is waiting.
        self._own_check_from: str | None = None
        self._upkeep_task: asyncio.Task[None] | None = None
        self._upkeep_due = False
        self._sync_task: asyncio.Task[None] | None = None
        self._resume_token: str | None = None
        self.undecryptable = 0
        self.add_to_device_callback(self._on_unknown_to_device, (UnknownToDeviceEvent,))

    # ------------------------------------------------------------------ login

    @property
    def device_id(self) -> str:
        return str(self.client.device_id or "")

    @property
    def _login_path(self) -> Path:
        return self.store_dir / _LOGIN_FILE

    def _load_login(self) -> StoredLogin | None:
        if not self._login_path.exists():
            return None
        try:
            data = json.loads(
                self.sealer.open(self._login_path.read_bytes(), context=_LOGIN_CONTEXT)
            )
        except SealingError:
            raise
        except (ValueError, KeyError) as exc:
            raise MatrixError(
                f"{self._login_path} is damaged; move it away to sign in again"
            ) from exc
        return StoredLogin(**data)

    def _save_login(self, login: StoredLogin) -> None:
        blob = self.sealer.seal(json.dumps(login.__dict__), context=_LOGIN_CONTEXT)
        tmp = self._login_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._login_path)

    @property
    def has_stored_login(self) -> bool:
        return self._login_path.exists()

    async def login(self, password: str | None = None) -> None:
        """Restore the saved device, or log in with ``password`` the first time.

        A saved token the server no longer accepts is replaced by a password
        login *on the same device id*, so the crypto identity survives.
        """
        stored = self._load_login()
        if stored is not None:
            if stored.user_id != self.user_id:
                raise MatrixError(
                    f"the saved login in {self.store_dir} belongs to another account; "
                    "use a separate data dir per account"
                )
            self.client.restore_login(stored.user_id, stored.device_id, stored.access_token)
            who = await self._retry(self.client.whoami, "whoami")
            if isinstance(who, WhoamiResponse):
                self._restore_sync_token()
                await self._upload_keys_if_needed()
                logger.info("restored device %s for %s", self.device_id, self.user_id)
                return
            if isinstance(who, ErrorResponse) and _is_transient(who):
                raise HomeserverUnreachable(
                    f"whoami: the homeserver answers {who.status_code} only",
                    errcode=str(who.status_code),
                )
            if password is None:
                raise MatrixError(
                    "the saved access token was refused and no password is available "
                    "to sign in again",
                    errcode=str(who.status_code),
                )
            logger.warning("saved token refused; signing in again on device %s", stored.device_id)
        if password is None:
            raise MatrixError(f"no saved login for {self.user_id}; a password is needed once")
        resp = await self._retry(
            lambda: self.client.login(password=password, device_name=self.device_name),
            "login",
        )
        if not isinstance(resp, LoginResponse):
            raise MatrixError(
                f"could not sign in as {self.user_id}: {resp.status_code}",
                errcode=str(resp.status_code),
            )
        self._save_login(
            StoredLogin(self.homeserver, self.user_id, resp.device_id, resp.access_token)
        )
        self._restore_sync_token()
        await self._upload_keys_if_needed()
        logger.info("signed in %s on new device %s", self.user_id, self.device_id)

    async def _upload_keys_if_needed(self) -> None:
        if self.client.should_upload_keys:
            check(await self._retry(self.client.keys_upload, "keys upload"), "keys upload")

    async def ensure_cross_signing(
        self, password: str | None, *, recovery_key: str | None = None
    ) -> CrossSigningStatus:
        """Make this device cross-signed by its owner (MSC4153: without it, current
        clients neither send us room keys nor trust what we send)."""
        cs = CrossSigning(self.client, self.store_dir / "cross_signing.sealed", self.sealer)
        status = await cs.ensure(password=password, recovery_key=recovery_key)
        if self._trust is not None:
            self._trust.devices_changed([self.user_id])
        return status

    def use_trust(self, policy: TrustPolicy) -> None:
        """Keep ``policy``'s key cache current from the sync stream.

        Users named in ``device_lists.changed`` and users who join or are invited
        are marked for a new lookup; users in ``device_lists.left`` are
        forgotten. Our own account gets its own rule, for two reasons. Its devices
        are looked up again in the background upkeep only, never on the send path.
        And Synapse names in ``device_lists.changed`` every user whose membership
        event a sync batch carries, lazy-loaded member state included ("newly
        joined", by its own admission unchecked): our own membership is in nearly
        every batch in which the bot spoke, so our own account is named in most
        syncs without any change. When such a batch names us, the upkeep first asks
        ``/keys/changes`` since that batch, which counts real membership changes
        only (and every device or cross-signing key change); only if it names us
        too are our keys looked up. A report without our membership in the batch,
        or a failed ``/keys/changes``, is taken as a change. Device key objects
        that come back unchanged cost no new signature check (the policy keeps
        its verdicts per key object). Sends look up stale users through the
        policy, in the same request that refreshes nio's device store.
        """
        self._trust = policy
        policy.follow_changes()

    async def _on_sync_received(self, resp: SyncResponse) -> None:
        if self.resume_lazily and self._since:
            await self._complete_lazily(resp, self._since)
        me = self.user_id
        joined = _joined_users(resp) - {me}  # our own joins change none of our devices
        reported = set(resp.device_list.changed)
        changed = (reported | joined) - {me}
        left = set(resp.device_list.left)
        if me in reported and self._trust is not None:
            if self._since and _membership_in(resp, me):
                if self._own_check_from is None:  # the earliest waiting report counts
                    self._own_check_from = self._since
            else:
                self._own_devices_changed = True
        olm = self.client.olm
        if olm is not None:
            # What nio does after the callbacks (new members, changed devices), done
            # before them: a send from a callback then queries them first.
            olm.add_changed_users(((changed | left) & olm.tracked_users) | (joined - {me}))
        if self._trust is not None:
            self._trust.devices_changed(changed)
            self._trust.forget(left - {me})

    # ------------------------------------------------------------------ sync

    def _restore_sync_token(self) -> None:
        path = self.store_dir / _SYNC_TOKEN_FILE
        if path.exists():
            token = path.read_text(encoding="utf-8").strip()
            if token:
                # nio keeps rooms in memory only: unless rooms are loaded lazily,
                # the first sync after a restart must carry full state, or known
                # rooms stay unknown until something changes in them. The token
                # is passed as ``since`` rather than set as nio's ``next_batch``:
                # nio ignores a response whose token equals its own, which a
                # quiet resync is.
                self._resume_token = token

    def _save_sync_token(self, token: str) -> None:
        path = self.store_dir / _SYNC_TOKEN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token, encoding="utf-8")
        os.replace(tmp, path)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.state:
            return
        self.state = state
        logger.info("matrix connection %s", state.value)
        for listener in list(self.state_listeners):
            try:
                listener(state)
            except Exception:
                logger.exception("connection state listener failed")

    async def sync_once(self, timeout_ms: int = 0) -> SyncResponse:
        """One sync round: fetch, run callbacks, save the token, then key upkeep."""
        resp = await self._sync_round(timeout_ms)
        await self._key_upkeep()
        self._synced.set()
        return resp

    async def _sync_round(self, timeout_ms: int) -> SyncResponse:
        resume = self._resume_token
        self._since = resume or self.client.next_batch
        full_state = bool(resume) and not self.resume_lazily
        resp = await self.client.sync(
            timeout=0 if resume else timeout_ms,
            sync_filter=self._delta_filter if self._since and not full_state else self._sync_filter,
            since=resume,
            full_state=full_state,
        )
        if not isinstance(resp, SyncResponse):
            check(resp, "sync")
        self._resume_token = None
        self._set_state(ConnectionState.ONLINE)
        self._save_sync_token(resp.next_batch)
        return resp

    def _kick_upkeep(self) -> None:
        """Run :meth:`_key_upkeep` in the background; one run at a time, coalesced."""
        self._upkeep_due = True
        if self._upkeep_task is not None and not self._upkeep_task.done():
            return

        async def loop() -> None:
            while self._upkeep_due:
                self._upkeep_due = False
                try:
                    await self._key_upkeep()
                except asyncio.CancelledError:
                    raise
                except (MatrixError, *NO_ANSWER) as exc:
                    logger.warning("key upkeep failed (%s); next sync retries", type(exc).__name__)
                except Exception:
                    logger.exception("key upkeep failed")

        self._upkeep_task = asyncio.create_task(loop(), name=f"key-upkeep:{self.user_id}")

    async def _key_upkeep(self) -> None:
        """Upload one-time keys, look up changed devices, unwedge, send to-device."""
        if self.client.should_upload_keys:
            r = await self.client.keys_upload()
            if isinstance(r, KeysUploadError):
                logger.warning("keys upload failed: %s", r.status_code)
        if self._trust is not None:
            # Others first: a send may wait for them. Our own account, when a report
            # waits for its check, after that check.
            since, self._own_check_from = self._own_check_from, None
            wanted = self._trust.stale_users() | set(self.client.users_for_key_query)
            if since is not None:
                wanted.discard(self.user_id)
            if self._own_devices_changed:
                self._own_devices_changed = False
                wanted.add(self.user_id)
            await self._trust.refresh(self.client, wanted)
            if since is not None and self.user_id not in wanted:
                if await self._own_keys_changed_since(since):
                    await self._trust.refresh(self.client, [self.user_id])
                else:
                    self._keep_own_keys()
        if self.client.should_query_keys:
            await self._nio_keys_query()
        if self.client.should_claim_keys:
            users = self.client.get_users_for_key_claiming()
            r3 = await self.client.keys_claim(users)
            if isinstance(r3, KeysClaimError):
                logger.warning("keys claim failed: %s", r3.status_code)
        to_device = await self.client.send_to_device_messages()
        for r4 in to_device or ():
            if isinstance(r4, ErrorResponse):
                logger.warning("to-device send failed: %s", r4.status_code)

    def _keep_own_keys(self) -> None:
        """Our keys are unchanged: take our account off nio's query list, where nio put
        it for the same report (once our keys were looked up at least once)."""
        olm = self.client.olm
        me = self.user_id
        if olm is not None and me in olm.tracked_users and self._trust is not None:
            if not self._trust.is_stale(me):
                olm.users_for_key_query.discard(me)

    async def _own_keys_changed_since(self, since: str) -> bool:
        """True unless ``/keys/changes`` says our account's keys are unchanged since ``since``."""
        query = urlencode({"from": since, "to": self.client.next_batch or since})
        try:
            status, body = await self.raw("GET", f"/_matrix/client/v3/keys/changes?{query}")
        except NO_ANSWER:
            return True
        changed = body.get("changed") if status == 200 and isinstance(body, dict) else None
        return not isinstance(changed, list) or self.user_id in changed

    async def _nio_keys_query(self) -> None:
        """nio's own device-list query, one at a time: a send that needs it joins it."""
        if self._nio_query is None or self._nio_query.done():

            async def query() -> None:
                r = await self._retry(self.client.keys_query, "keys query")
                if isinstance(r, KeysQueryError):
                    check(r, "keys query")

            self._nio_query = asyncio.ensure_future(query())
        await asyncio.shield(self._nio_query)

    async def run(self, *, timeout_ms: int = 30_000) -> None:
        """Sync until :meth:`stop`. Survives the homeserver going away."""
        backoff = 0.5
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                await self._sync_round(timeout_ms)
                self._kick_upkeep()
                self._synced.set()
            except asyncio.CancelledError:
                raise
            except MatrixError as exc:
                if exc.errcode in ("M_UNKNOWN_TOKEN", "M_FORBIDDEN"):
                    self._set_state(ConnectionState.STOPPED)
                    raise MatrixError(
                        f"the homeserver no longer accepts the session of {self.user_id} "
                        "(signed out elsewhere?); sign in again",
                        errcode=exc.errcode,
                    ) from exc
                logger.warning("sync failed (%s); retrying in %.1fs", exc.errcode, backoff)
            except NO_ANSWER as exc:
                logger.warning(
                    "homeserver unreachable (%s); retrying in %.1fs", type(exc).__name__, backoff
                )
            else:
                backoff = 0.5
                self._set_state(ConnectionState.ONLINE)
                continue
            self._set_state(ConnectionState.RECONNECTING)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), timeout=backoff * (0.8 + 0.4 * random.random())
                )
            backoff = min(backoff * 2, self._max_backoff)
        self._set_state(ConnectionState.STOPPED)

    def start(self) -> asyncio.Task[None]:
        """Run the sync loop in a task that this session keeps and stops."""
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self.run(), name=f"sync:{self.user_id}")
        return self._sync_task

    async def wait_synced(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        self._stopping.set()
        for task in (self._sync_task, self._upkeep_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._sync_task = self._upkeep_task = None
        self._set_state(ConnectionState.STOPPED)

    async def close(self) -> None:
        """Stop syncing and release the HTTP session and the crypto store."""
        await self.stop()
        await self.client.close()
        store = getattr(self.client, "store", None)
        db = getattr(store, "database", None)
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()

    # ------------------------------------------------------------------ callbacks

    def add_event_callback(self, handler: EventHandler, types: type | tuple[type, ...]) -> None:
        """Register a room-event handler that can never break the sync loop."""
        name = getattr(handler, "__qualname__", repr(handler))

        async def guarded(room: MatrixRoom, event: Event) -> None:
            try:
                await handler(room, event)
            except Exception:
                logger.exception(
                    "handler %s failed on event %s in %s",
                    name,
                    getattr(event, "event_id", "?"),
                    room.room_id,
                )

        self.client.add_event_callback(guarded, types)

    def add_to_device_callback(
        self, handler: ToDeviceHandler, types: type | tuple[type, ...]
    ) -> None:
        name = getattr(handler, "__qualname__", repr(handler))

        async def guarded(event: ToDeviceEvent) -> None:
            try:
                await handler(event)
            except Exception:
                logger.exception("to-device handler %s failed", name)

        self.client.add_to_device_callback(guarded, types)

    async def _on_unknown_to_device(self, event: Any) -> None:
        # nio drops m.room_key.withheld without a word; it is how a client tells
        # us it refuses to share keys with this device, so say it in the log.
        source = getattr(event, "source", {}) or {}
        if source.get("type") in ("m.room_key.withheld", "org.matrix.room_key.withheld"):
            content = source.get("content", {})
            logger.warning(
                "room key withheld by %s (code %s) for room %s",
                source.get("sender"),
                content.get("code"),
                content.get("room_id"),
            )

    # ------------------------------------------------------------------ sending

    async def _retry(self, call: Callable[[], Awaitable[R]], what: str, *, attempts: int = 8) -> R:
        """Run ``call`` and retry transient failures with capped back-off.

        Error responses that are not transient are returned to the caller
        (who checks them); rate limits honour ``retry_after_ms``.
        """
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                resp = await call()
            except NO_ANSWER as exc:
                if attempt == attempts:
                    raise HomeserverUnreachable(f"{what}: homeserver unreachable") from exc
                logger.warning("%s: homeserver unreachable; retry %d", what, attempt)
            else:
                if not (isinstance(resp, ErrorResponse) and _is_transient(resp)):
                    return resp
                if attempt == attempts:
                    return resp
                retry_ms = getattr(resp, "retry_after_ms", None)
                if retry_ms:
                    delay = max(delay, retry_ms / 1000)
                logger.warning("%s: %s; retry %d", what, resp.status_code, attempt)
            await self._sleep(delay)
            delay = min(delay * 2, self._max_backoff)
        raise AssertionError("unreachable")

    def _room_lock(self, room_id: str) -> asyncio.Lock:
        lock = self._room_locks.get(room_id)
        if lock is None:
            lock = self._room_locks[room_id] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ lazy rooms

    async def _complete_lazily(self, resp: SyncResponse, since: str) -> None:
        """Before nio sees a delta: the state of rooms new to it, and the events of gaps."""
        me = self.user_id
        unknown = [
            room_id
            for room_id, info in resp.rooms.join.items()
            if room_id not in self.client.rooms and not _own_join(info, me)
        ]
        # A room we just joined has no gap: what came before the join is not ours.
        gaps = [
            (room_id, info)
            for room_id, info in resp.rooms.join.items()
            if info.timeline.limited and info.timeline.prev_batch and not _own_join(info, me)
        ]
        gate = asyncio.Semaphore(8)

        async def bounded(work: Awaitable[Any]) -> Any:
            async with gate:
                return await work

        await asyncio.gather(
            *(bounded(self.load_room(r)) for r in unknown),
            *(bounded(self._backfill(r, info, since)) for r, info in gaps),
        )

    async def load_room(self, room_id: str) -> MatrixRoom | None:
        """The room as nio would have it after a full-state sync, fetched now.

        None if we are not in it (or the homeserver does not say). Concurrent
        calls for one room share one request.
        """
        room = self.client.rooms.get(room_id)
        if room is not None:
            return room
        task = self._room_loads.get(room_id)
        if task is None:
            task = self._room_loads[room_id] = asyncio.ensure_future(self._fetch_room(room_id))
            task.add_done_callback(lambda _t: self._room_loads.pop(room_id, None))
        return await asyncio.shield(task)

    async def _fetch_room(self, room_id: str) -> MatrixRoom | None:
        status, body = await self.raw("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state")
        if status != 200 or not isinstance(body, list):
            logger.info("state of %s not readable (HTTP %s)", room_id, status)
            return None
        existing = self.client.rooms.get(room_id)
        if existing is not None:  # the sync brought it meanwhile
            return existing
        room = MatrixRoom(room_id, self.user_id, room_id in self.client.encrypted_rooms)
        for raw_event in body:
            if not isinstance(raw_event, dict):
                continue
            event = Event.parse_event(raw_event)
            if isinstance(event, RoomMemberEvent):
                room.handle_membership(event)
            elif isinstance(event, Event):
                room.handle_event(event)
        room.members_synced = True  # the state holds every member
        if room.encrypted:
            self.client.encrypted_rooms.add(room_id)
            if self.client.olm is not None:
                self.client.olm.update_tracked_users(room)
        self.client.rooms[room_id] = room
        return room

    async def _backfill(self, room_id: str, info: Any, since: str) -> None:
        """Put the events a limited timeline left out back in front of it, oldest first."""
        missed: list[Any] = []
        token = info.timeline.prev_batch
        for _ in range(_BACKFILL_PAGES):
            start = token

            async def page(start: str = start) -> Any:
                return await self.client.room_messages(
                    room_id, start=start, end=since, direction=MessageDirection.back, limit=100
                )

            resp = await self._retry(page, "back-fill")
            if not isinstance(resp, RoomMessagesResponse):
                logger.warning("back-fill of %s failed: %s", room_id, resp.status_code)
                break
            missed.extend(resp.chunk)
            if not resp.chunk or not resp.end or resp.end == token:
                break
            token = resp.end
        else:
            logger.warning("back-fill of %s stopped after %d pages", room_id, _BACKFILL_PAGES)
        if missed:
            seen = {getattr(e, "event_id", None) for e in info.timeline.events}
            older = [e for e in reversed(missed) if getattr(e, "event_id", None) not in seen]
            info.timeline.events[:0] = older
            logger.info("back-filled %d event(s) of a gap in %s", len(older), room_id)

    async def wait_for_room(self, room_id: str, timeout: float = 30.0) -> MatrixRoom:
        """Wait until a room we joined shows up in the sync state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while room_id not in self.client.rooms:
            if loop.time() > deadline:
                raise MatrixError(f"room {room_id} did not appear in sync")
            if self._sync_task is None or self._sync_task.done():
                await self.sync_once(0)
            else:
                await asyncio.sleep(0.05)
        return self.client.rooms[room_id]

    async def prepare_encryption(self, room_id: str) -> None:
        """Everything nio needs before encrypting for ``room_id``.

        Members fetched once (else ``MembersSyncError``), device lists fresh,
        one-time keys claimed for every device without an Olm session, and the
        trust hooks run (they decide which devices get room keys).
        """
        room = self.client.rooms[room_id]
        if not room.members_synced:
            resp = await self._retry(lambda: self.client.joined_members(room_id), "members")
            if isinstance(resp, JoinedMembersError):
                check(resp, "fetching room members")
        await self._fresh_devices(set(room.users), set(room.invited_users))
        await self._claim_missing(room_id)
        for hook in self.before_encrypt:
            await hook(room_id)

    async def _fresh_devices(self, users: set[str], invited: Collection[str]) -> None:
        """Device lists of ``users`` current before encrypting for them.

        Our own account is left to the upkeep (see :meth:`use_trust`) once known.
        """
        if self._trust is not None:
            await self._trust.ensure_fresh(self.client, users, volatile=invited)
        olm = self.client.olm
        me = {self.user_id} if olm is not None and self.user_id in olm.tracked_users else set()
        # A query already under way may have been asked before these users were due:
        # then the next one is awaited too.
        for _ in range(3):
            if not (users - me) & self.client.users_for_key_query:
                return
            await self._nio_keys_query()

    async def _claim_missing(self, room_id: str) -> None:
        """Claim one-time keys for the room's devices without an Olm session.

        Under a lock per user: two sends to the same person claim once, sends to
        other people do not wait.
        """
        missing = self.client.get_missing_sessions(room_id)
        if not missing:
            return
        async with contextlib.AsyncExitStack() as stack:
            for user_id in sorted(missing):  # always in the same order: no deadlock
                await stack.enter_async_context(self._user_lock(user_id))
            missing = self.client.get_missing_sessions(room_id)  # others may have claimed
            if missing:
                r = await self._retry(lambda: self.client.keys_claim(missing), "keys claim")
                if isinstance(r, KeysClaimError):
                    logger.warning("keys claim failed: %s", r.status_code)

    def _user_lock(self, user_id: str) -> asyncio.Lock:
        lock = self._claim_locks.get(user_id)
        if lock is None:
            lock = self._claim_locks[user_id] = asyncio.Lock()
        return lock

    async def send(
        self,
        room_id: str,
        content: Mapping[str, Any],
        *,
        event_type: str = "m.room.message",
        txn_id: str | None = None,
        allow_plaintext: bool = False,
    ) -> str:
        """Send an event, encrypted; return its event id.

        A room without encryption is refused unless ``allow_plaintext`` (the
        one use: telling someone in an unencrypted room to open an encrypted
        one). ``txn_id`` makes the send idempotent: the homeserver answers a
        repeated transaction id with the first event id instead of sending
        twice.
        """
        room = self.client.rooms.get(room_id)
        if room is None and self.resume_lazily:
            room = await self.load_room(room_id)
        if room is None:
            room = await self.wait_for_room(room_id)
        if not room.encrypted and not allow_plaintext:
            # A room we just created may show our join before its encryption
            # state; nio would then send in the clear. Wait for the state.
            await self._wait_encrypted(room)
        async with self._room_lock(room_id):
            if room.encrypted:
                await self.prepare_encryption(room_id)
            resp = await self._retry(
                lambda: self.client.room_send(
                    room_id,
                    event_type,
                    dict(content),
                    tx_id=txn_id,
                    ignore_unverified_devices=True,
                ),
                "send",
            )
        if not isinstance(resp, RoomSendResponse):
            check(resp, "sending a message")
        return str(resp.event_id)

    async def _wait_encrypted(self, room: MatrixRoom, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not room.encrypted:
            if loop.time() > deadline:
                raise MatrixError(
                    f"refusing to send in clear: room {room.room_id} is not encrypted"
                )
            if self._sync_task is None or self._sync_task.done():
                await self.sync_once(0)
            else:
                await asyncio.sleep(0.05)

    async def send_text(
        self,
        room_id: str,
        body: str,
        *,
        notice: bool = False,
        txn_id: str | None = None,
        html: str | None = None,
        allow_plaintext: bool = False,
    ) -> str:
        content: dict[str, Any] = {"msgtype": "m.notice" if notice else "m.text", "body": body}
        if html is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = html
        return await self.send(room_id, content, txn_id=txn_id, allow_plaintext=allow_plaintext)

    def synced_members(self, room_id: str) -> frozenset[str] | None:
        """Who the last sync lists as joined or invited in ``room_id``; None if not loaded."""
        room = self.client.rooms.get(room_id)
        return None if room is None else frozenset(room.users)

    async def raw(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """An authenticated request nio has no method for; returns (status, json)."""
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        data = json.dumps(body) if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        resp = await self.client.send(method, path, data, headers)
        try:
            payload = await resp.json()
        except (aiohttp.ContentTypeError, ValueError):
            payload = None
        return resp.status, payload
