"""Device trust policy: our side of MSC4153 ("exclude non-cross-signed devices").

matrix-nio only knows per-device "verified / blacklisted / ignored" flags and
refuses to encrypt while any device is undecided. We decide those flags from
cross-signing: a device its owner has cross-signed is *verified*, any other
device is *blacklisted* (``cross-signed-only``, the default) or *ignored*
(``permissive``: keys are shared, but the device is reported as unsigned).
So nio shares room keys exactly with the devices the policy allows, and events
from other devices can be shown as untrusted.

The policy also remembers each user's master key: a different master key means a
new identity (new install, reset keys, or someone else), which the bot writes to
its audit log and the TUI shows as a warning. Messages keep flowing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nio import AsyncClient, JoinedMembersError

from e2ecounsel.errors import ConfigError, MatrixError
from e2ecounsel.matrix.crosssigning import UserIdentity, query_cross_signing

logger = logging.getLogger(__name__)

TrustMode = Literal["cross-signed-only", "permissive"]
TRUST_MODES: tuple[TrustMode, ...] = ("cross-signed-only", "permissive")


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

    Call :meth:`apply` before encrypting for a room (after nio's keys_query).
    ``on_identity_change`` is called for each master-key change (keep it fast;
    it runs inline).
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
        # (user, device) -> curve25519 key of devices seen cross-signed by their owner
        self._signed: dict[tuple[str, str], str] = {}

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
        """Set nio's device flags for everyone in ``room_id`` from cross-signing."""
        members = await self._room_members(client, room_id)
        report = await self.apply_users(client, members)
        report.room_id = room_id
        return report

    async def apply_users(self, client: AsyncClient, user_ids: Iterable[str]) -> TrustReport:
        """Same as :meth:`apply` for an explicit set of users."""
        users = sorted(set(user_ids))
        report = TrustReport(room_id=None)
        if not users:
            return report
        if client.should_query_keys:
            await client.keys_query()
        identities = await query_cross_signing(client, users)
        for user_id in users:
            ident = identities.get(user_id) or UserIdentity(user_id=user_id)
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

    def _apply_user(self, client: AsyncClient, ident: UserIdentity, report: TrustReport) -> None:
        user_id = ident.user_id
        for device in client.device_store.active_user_devices(user_id):
            if user_id == client.user_id and device.id == client.device_id:
                continue
            published = ident.device_ed25519(device.id)
            signed = ident.is_device_signed(device.id) and published == device.ed25519
            key = (user_id, device.id)
            if signed:
                self._signed[key] = device.curve25519
                if not device.verified:  # nio keeps one trust state; this replaces blacklisted
                    client.verify_device(device)
                report.trusted.append(key)
                continue
            self._signed.pop(key, None)
            if self.mode == "cross-signed-only":
                if not device.blacklisted:
                    client.blacklist_device(device)
                report.excluded.append(key)
            else:
                if not device.ignored:
                    client.ignore_device(device)
                report.unsigned_included.append(key)

    def is_device_trusted(self, user_id: str, device_id: str) -> bool:
        """True if the device was cross-signed by its owner when last checked."""
        return (user_id, device_id) in self._signed

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
        return any(
            user == user_id and curve == sender_key for (user, _), curve in self._signed.items()
        )

    def known_master_key(self, user_id: str) -> str | None:
        """The master key we last saw for ``user_id`` (None if never seen)."""
        return self._masters.get(user_id)
