"""Device trust policy: our side of MSC4153 ("exclude non-cross-signed devices").

matrix-nio only knows per-device "verified / blacklisted / ignored" flags and
refuses to encrypt while any device is undecided. We decide those flags from
cross-signing: a device its owner has cross-signed is *verified*, any other
device is *blacklisted* (``cross-signed-only``, the default) or *ignored*
(``permissive``: keys are shared, but the device is reported as unsigned).
So nio shares room keys exactly with the devices the policy allows, and events
from other devices can be shown as untrusted.

Verdicts are cached. Once told that someone reports every device-list change
and join to it (:meth:`TrustPolicy.follow_changes`; :meth:`MatrixSession.use_trust`
does), the policy asks the homeserver again only about users whose devices or
cross-signing keys changed since it last looked, so a steady conversation costs
no ``/keys/query`` at all. A signature check is done once per (user, device key
object, self-signing key) and remembered. A device that loses its
cross-signature is excluded on the next send, and nio replaces the outbound
Megolm sessions it held, so it cannot read what follows.

The policy also remembers each user's master key: a different master key means a
new identity (new install, reset keys, or someone else), which the bot writes to
its audit log and the TUI shows as a warning. Messages keep flowing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nio import AsyncClient, JoinedMembersError, KeysQueryResponse

from e2ecounsel.errors import ConfigError, MatrixError
from e2ecounsel.matrix.crosssigning import UserIdentity, identities_from_keys, query_keys

logger = logging.getLogger(__name__)

TrustMode = Literal["cross-signed-only", "permissive"]
TRUST_MODES: tuple[TrustMode, ...] = ("cross-signed-only", "permissive")
_MAX_CACHED_VERDICTS = 20_000


@dataclass(frozen=True)
class IdentityChange:
    """A user's master key differs from the one we saw before."""

    user_id: str
    old_master_key: str
    new_master_key: str


@dataclass
class TrustReport:
    """What :meth:`TrustPolicy.apply` decided for the members of a room."""

    room_id: str | None
    trusted: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    unsigned_included: list[tuple[str, str]] = field(default_factory=list)
    identity_changes: list[IdentityChange] = field(default_factory=list)

    def excluded_users(self) -> set[str]:
        """Users with at least one device that gets no room keys (tell them why)."""
        return {user for user, _ in self.excluded}


class MasterKeyStore:
    """The last master key seen per user, in a small JSON file.

    Master keys are public, so the file need not be sealed; it holds user ids,
    which the operator's data directory already protects.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._keys: dict[str, str] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError("the file of known identities is damaged", file=path) from exc
            if isinstance(data, dict):
                self._keys = {str(k): str(v) for k, v in data.items()}

    def get(self, user_id: str) -> str | None:
        return self._keys.get(user_id)

    def set(self, user_id: str, master_key: str) -> None:
        if self._keys.get(user_id) == master_key:
            return
        self._keys[user_id] = master_key
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(self._keys, sort_keys=True, indent=1), encoding="utf-8")
        os.replace(tmp, self._path)


class TrustPolicy:
    """Decides which devices get room keys and whose messages count as trusted.

    Call :meth:`apply` before encrypting for a room. ``on_identity_change`` is
    called for each master-key change (keep it fast; it runs inline).
    """

    def __init__(
        self,
        mode: TrustMode = "cross-signed-only",
        *,
        known_identities: Path | None = None,
        on_identity_change: Callable[[IdentityChange], Any] | None = None,
    ) -> None:
        if mode not in TRUST_MODES:
            raise ConfigError(
                f"unknown trust mode {mode!r}; use one of {', '.join(TRUST_MODES)}",
                key="trust.mode",
            )
        self.mode: TrustMode = mode
        self._masters = MasterKeyStore(known_identities)
        self._on_identity_change = on_identity_change
        # user -> device -> curve25519 key of devices seen cross-signed by their owner
        self._signed: dict[str, dict[str, str]] = {}
        # What /keys/query last said per user, and the users it may be outdated for
        # (a counter per user, bumped on each reported change).
        self._identities: dict[str, UserIdentity] = {}
        self._changes: dict[str, int] = {}
        self._follows = False
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._verdicts: dict[tuple[str, str, str], bool] = {}
        # For benches and tests: /keys/query requests made, and how often an
        # ensure_fresh (the send path) had to wait for one.
        self.queries = 0
        self.waits = 0

    # ------------------------------------------------------------ change feed

    def follow_changes(self) -> None:
        """Promise that every device-list change and join will be reported.

        From then on a user's keys are asked for again only after
        :meth:`devices_changed` named them. Without the promise, every
        :meth:`apply` asks the homeserver (nothing else would tell us).
        """
        self._follows = True

    def devices_changed(self, user_ids: Iterable[str]) -> None:
        """These users' devices or cross-signing keys changed (or they just joined)."""
        for user_id in user_ids:
            self._changes[user_id] = self._changes.get(user_id, 0) + 1

    def forget(self, user_ids: Iterable[str]) -> None:
        """We share no room with these users any more: nobody reports their changes."""
        users = list(user_ids)
        self.devices_changed(users)
        for user_id in users:
            self._identities.pop(user_id, None)

    def is_stale(self, user_id: str) -> bool:
        """True if the keys we hold for ``user_id`` may be outdated (or are missing)."""
        return not self._follows or user_id not in self._identities or user_id in self._changes

    def stale_users(self) -> set[str]:
        """Known users with a reported change not yet looked up."""
        return {u for u in self._changes if u in self._identities}

    # ------------------------------------------------------------ key lookups

    async def refresh(self, client: AsyncClient, user_ids: Iterable[str]) -> None:
        """Look these users up now, in one ``/keys/query``, whatever the cache says.

        The answer also goes to nio's device store, so nio needs no query of its
        own for them.
        """
        users = sorted(set(user_ids))
        if users:
            await asyncio.shield(self._start_refresh(client, users))

    async def ensure_fresh(
        self, client: AsyncClient, user_ids: Iterable[str], *, volatile: Collection[str] = ()
    ) -> None:
        """Make the cached keys of ``user_ids`` current: look up only the stale ones.

        ``volatile`` users are looked up whatever the cache says (invited users:
        the homeserver reports device changes only between joined members).
        A lookup already under way for a user is shared, not repeated.
        """
        users = set(user_ids)
        if not users:
            return
        if not self._follows:
            self.waits += 1
            await self.refresh(client, users)
            return
        self.devices_changed(set(volatile) & users)
        for _ in range(3):  # a change reported while looking up: look again, within reason
            need = {u for u in users if self.is_stale(u)}
            if not need:
                return
            self.waits += 1
            waits = {self._inflight[u] for u in need if u in self._inflight}
            start = sorted(u for u in need if u not in self._inflight)
            if start:
                waits.add(self._start_refresh(client, start))
            await asyncio.gather(*(asyncio.shield(t) for t in waits))

    def _start_refresh(self, client: AsyncClient, users: list[str]) -> asyncio.Task[None]:
        marks = {u: self._changes.get(u) for u in users}
        task = asyncio.ensure_future(self._fetch(client, marks))
        for user_id in users:
            self._inflight[user_id] = task

        def done(t: asyncio.Task[None]) -> None:
            for user_id in users:
                if self._inflight.get(user_id) is t:
                    del self._inflight[user_id]
            if not t.cancelled() and t.exception() is not None:
                logger.info("keys lookup failed: %s", type(t.exception()).__name__)

        task.add_done_callback(done)
        return task

    async def _fetch(self, client: AsyncClient, marks: Mapping[str, int | None]) -> None:
        users = list(marks)
        self.queries += 1
        payload = await query_keys(client, users)
        await _feed_nio(client, payload)
        for user_id, ident in identities_from_keys(payload, users).items():
            self._identities[user_id] = ident
            if self._changes.get(user_id) == marks[user_id]:
                self._changes.pop(user_id, None)

    # ------------------------------------------------------------ decisions

    async def _room_members(self, client: AsyncClient, room_id: str) -> list[str]:
        room = client.rooms.get(room_id)
        if room is not None and room.members_synced:
            return list(room.users)
        resp = await client.joined_members(room_id)
        if isinstance(resp, JoinedMembersError):
            raise MatrixError("the room members cannot be read", errcode=resp.status_code)
        members = [m.user_id for m in resp.members]
        if room is not None:
            members.extend(u for u in room.users if u not in members)  # invited users
        return members

    async def apply(self, client: AsyncClient, room_id: str) -> TrustReport:
        """Set nio's device flags for everyone in ``room_id`` from cross-signing.

        A device that is excluded now but was not before (it lost its
        cross-signature) makes nio drop the outbound sessions of its owner's
        rooms, so the next message starts a new one the device never gets.
        """
        members = await self._room_members(client, room_id)
        room = client.rooms.get(room_id)
        invited = set(room.invited_users) if room is not None else set()
        report = await self.apply_users(client, members, volatile=invited)
        report.room_id = room_id
        return report

    async def apply_users(
        self, client: AsyncClient, user_ids: Iterable[str], *, volatile: Collection[str] = ()
    ) -> TrustReport:
        """Same as :meth:`apply` for an explicit set of users."""
        users = sorted(set(user_ids))
        report = TrustReport(room_id=None)
        if not users:
            return report
        await self.ensure_fresh(client, users, volatile=volatile)
        for user_id in users:
            ident = self._identities.get(user_id) or UserIdentity(user_id=user_id)
            self._track_master(ident, report)
            self._apply_user(client, ident, report)
        if report.excluded:
            logger.info(
                "%d device(s) excluded: not cross-signed by their owner", len(report.excluded)
            )
        return report

    def _track_master(self, ident: UserIdentity, report: TrustReport) -> None:
        new = ident.master_key
        if new is None:
            return
        old = self._masters.get(ident.user_id)
        if old is not None and old != new:
            change = IdentityChange(ident.user_id, old, new)
            report.identity_changes.append(change)
            logger.warning("identity (master key) of a room member changed")
            if self._on_identity_change is not None:
                try:
                    self._on_identity_change(change)
                except Exception:  # a callback must not stop key sharing
                    logger.exception("identity change callback failed")
        self._masters.set(ident.user_id, new)

    def _device_signed(self, ident: UserIdentity, device_id: str) -> bool:
        """``ident.is_device_signed``, remembered per (user, device object, self-signing key)."""
        device = ident.devices.get(device_id)
        if device is None:
            return False
        key = (
            ident.user_id,
            json.dumps(device, sort_keys=True),
            json.dumps([ident.master, ident.self_signing], sort_keys=True),
        )
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= _MAX_CACHED_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[key] = ident.is_device_signed(device_id)
        return verdict

    def _apply_user(self, client: AsyncClient, ident: UserIdentity, report: TrustReport) -> None:
        user_id = ident.user_id
        signed_devices: dict[str, str] = {}
        for device in client.device_store.active_user_devices(user_id):
            if user_id == client.user_id and device.id == client.device_id:
                continue
            published = ident.devices.get(device.id, {}).get("keys", {})
            signed = (
                isinstance(published, dict)
                and published.get(f"ed25519:{device.id}") == device.ed25519
                and self._device_signed(ident, device.id)
            )
            key = (user_id, device.id)
            if signed:
                signed_devices[device.id] = device.curve25519
                if not device.verified:  # nio keeps one trust state; this replaces blacklisted
                    client.verify_device(device)
                report.trusted.append(key)
                continue
            if self.mode == "cross-signed-only":
                if not device.blacklisted:
                    client.blacklist_device(device)
                report.excluded.append(key)
            else:
                if not device.ignored:
                    client.ignore_device(device)
                report.unsigned_included.append(key)
        if signed_devices:
            self._signed[user_id] = signed_devices
        else:
            self._signed.pop(user_id, None)

    def is_device_trusted(self, user_id: str, device_id: str) -> bool:
        """True if the device was cross-signed by its owner when last checked."""
        return device_id in self._signed.get(user_id, {})

    def is_event_trusted(self, event: Any) -> bool:
        """True if a decrypted event comes from a device its owner cross-signed.

        Matches the Olm identity key the room key came from (``sender_key``)
        against devices seen signed in the last :meth:`apply`; an event we
        could not decrypt, or from a device not (yet) checked, is untrusted.
        """
        if not getattr(event, "decrypted", False):
            return False
        sender = getattr(event, "sender", None)
        sender_key = getattr(event, "sender_key", None)
        if not isinstance(sender, str) or not isinstance(sender_key, str):
            return False
        return self.is_sender_key_trusted(sender, sender_key)

    def is_sender_key_trusted(self, user_id: str, sender_key: str) -> bool:
        """True if ``sender_key`` (Curve25519) is a device of ``user_id`` seen cross-signed."""
        return sender_key in self._signed.get(user_id, {}).values()

    def known_master_key(self, user_id: str) -> str | None:
        """The master key we last saw for ``user_id`` (None if never seen)."""
        return self._masters.get(user_id)


async def _feed_nio(client: AsyncClient, payload: Mapping[str, Any]) -> None:
    """Give nio the device keys of a raw ``/keys/query`` answer, as if it had asked."""
    if client.olm is None:
        return
    resp = KeysQueryResponse.from_dict(
        {"device_keys": payload.get("device_keys") or {}, "failures": payload.get("failures") or {}}
    )
    if isinstance(resp, KeysQueryResponse):
        await client.receive_response(resp)
    else:
        logger.warning("keys lookup answer not understood by nio")
