"""Cross-signing on top of matrix-nio, which has none.

Current Element (and every client in "only signed devices" mode, MSC4153) sends
no room keys to a device that its owner has not cross-signed, and refuses its
messages. So each of our devices must be signed by its account's self-signing key:

* an account without cross-signing (the bot, a counselor who only uses our TUI):
  we create master / self-signing / user-signing ed25519 keys, upload them and
  keep the private keys sealed in ``key_file``; a restart reuses them;
* an account that already has cross-signing (set up in Element): the user gives
  the recovery key, we read the private keys from secret storage and check that
  they match what the server publishes;
* in both cases we then sign our own device with the self-signing key.

Everything goes through raw client-server requests on the nio client, because nio
has no API for ``/keys/device_signing/upload``, ``/keys/signatures/upload`` or the
cross-signing parts of ``/keys/query``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import nacl.signing
from nio import AsyncClient

from e2ecounsel.errors import E2ECounselError, MatrixError, SealingError
from e2ecounsel.matrix.canonical import (
    JsonDict,
    b64decode_lenient,
    public_key_b64,
    sign_json,
    unpadded_b64encode,
    verify_signature,
)
from e2ecounsel.matrix.secretstorage import (
    DEFAULT_KEY_TYPE,
    KEY_TYPE_PREFIX,
    RecoveryKeyError,
    SecretStorageError,
    check_key,
    decode_recovery_key,
    decrypt_secret,
    encode_recovery_key,
    encrypt_secret,
    key_description,
)
from e2ecounsel.sealing import Sealer

logger = logging.getLogger(__name__)

CLIENT_API = "/_matrix/client/v3"
SEAL_CONTEXT = "matrix.cross_signing_keys"
USAGES = ("master", "self_signing", "user_signing")
_MAX_RATE_LIMIT_RETRIES = 5
_KEY_ID_ALPHABET = string.ascii_letters + string.digits


class CrossSigningError(E2ECounselError):
    """Cross-signing cannot be set up for this account as things are."""


# --------------------------------------------------------------------------- raw requests


async def raw_request(
    client: AsyncClient, method: str, path: str, body: Mapping[str, Any] | None = None
) -> tuple[int, JsonDict]:
    """An authenticated client-server request; returns (HTTP status, JSON body).

    ``AsyncClient.send`` adds neither the access token nor JSON encoding, and
    does not honour rate limits; this does all three.
    """
    if not client.access_token:
        raise CrossSigningError("the Matrix client is not logged in")
    headers = {"Authorization": f"Bearer {client.access_token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    for _ in range(_MAX_RATE_LIMIT_RETRIES):
        try:
            resp = await client.send(method, CLIENT_API + path, data, headers=headers)
            status = resp.status
            try:
                payload = await resp.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                payload = {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MatrixError("the homeserver cannot be reached") from exc
        if not isinstance(payload, dict):
            payload = {}
        if status == 429:
            delay = float(payload.get("retry_after_ms", 1000)) / 1000
            logger.info("rate limited on %s, retrying in %.1fs", path, delay)
            await asyncio.sleep(min(delay, 30.0))
            continue
        return status, payload
    raise MatrixError("the homeserver keeps rate-limiting key requests", status=429)


def _check(status: int, payload: JsonDict, what: str) -> JsonDict:
    if status != 200:
        errcode = payload.get("errcode")
        logger.warning("%s failed: HTTP %s %s", what, status, errcode)
        raise MatrixError(
            f"the homeserver refused to {what} ({errcode or status})",
            errcode=str(errcode) if errcode else None,
            status=status,
        )
    return payload


async def get_account_data(client: AsyncClient, event_type: str) -> JsonDict | None:
    """Global account data of our own user, or None if it is not set."""
    user = quote(client.user_id, safe="")
    status, payload = await raw_request(
        client, "GET", f"/user/{user}/account_data/{quote(event_type, safe='')}"
    )
    if status == 404:
        return None
    return _check(status, payload, f"read account data {event_type}")


async def put_account_data(client: AsyncClient, event_type: str, content: JsonDict) -> None:
    """Set global account data of our own user."""
    user = quote(client.user_id, safe="")
    status, payload = await raw_request(
        client, "PUT", f"/user/{user}/account_data/{quote(event_type, safe='')}", content
    )
    _check(status, payload, f"write account data {event_type}")


# --------------------------------------------------------------------------- identities


def _single_ed25519(key_obj: Mapping[str, Any]) -> str | None:
    keys = key_obj.get("keys")
    if not isinstance(keys, Mapping):
        return None
    found = [v for k, v in keys.items() if isinstance(k, str) and k.startswith("ed25519:")]
    if len(found) != 1 or not isinstance(found[0], str):
        return None
    return found[0]


@dataclass
class UserIdentity:
    """What ``/keys/query`` says about one user: cross-signing keys and devices."""

    user_id: str
    master: JsonDict | None = None
    self_signing: JsonDict | None = None
    user_signing: JsonDict | None = None
    devices: dict[str, JsonDict] = field(default_factory=dict)

    @property
    def master_key(self) -> str | None:
        """The public master key (unpadded base64), the user's identity."""
        if self.master is None or self.master.get("user_id") != self.user_id:
            return None
        return _single_ed25519(self.master)

    @property
    def self_signing_key(self) -> str | None:
        """The public self-signing key, only if the master key signed it."""
        master = self.master_key
        ssk = self.self_signing
        if master is None or ssk is None or ssk.get("user_id") != self.user_id:
            return None
        pub = _single_ed25519(ssk)
        if pub is None:
            return None
        if not verify_signature(ssk, user_id=self.user_id, key_id=master, public_key_b64=master):
            return None
        return pub

    def device_ed25519(self, device_id: str) -> str | None:
        """The device's ed25519 key, only if the device signed its own key object."""
        dev = self.devices.get(device_id)
        if dev is None or dev.get("user_id") != self.user_id or dev.get("device_id") != device_id:
            return None
        keys = dev.get("keys")
        if not isinstance(keys, Mapping):
            return None
        key = keys.get(f"ed25519:{device_id}")
        if not isinstance(key, str):
            return None
        if not verify_signature(dev, user_id=self.user_id, key_id=device_id, public_key_b64=key):
            return None
        return key

    def is_device_signed(self, device_id: str) -> bool:
        """True if master -> self-signing -> device is a valid chain of signatures."""
        ssk = self.self_signing_key
        if ssk is None or self.device_ed25519(device_id) is None:
            return False
        return verify_signature(
            self.devices[device_id], user_id=self.user_id, key_id=ssk, public_key_b64=ssk
        )


async def query_keys(client: AsyncClient, user_ids: Iterable[str]) -> JsonDict:
    """Raw ``/keys/query`` for ``user_ids``: the whole answer, cross-signing included.

    One request serves both nio (its ``device_keys`` part, see
    :func:`identities_from_keys`) and the trust decisions.
    """
    users = sorted(set(user_ids))
    if not users:
        return {"device_keys": {}}
    status, payload = await raw_request(
        client, "POST", "/keys/query", {"device_keys": {u: [] for u in users}, "timeout": 10000}
    )
    return _check(status, payload, "look up keys")


def identities_from_keys(
    payload: Mapping[str, Any], user_ids: Iterable[str]
) -> dict[str, UserIdentity]:
    """The :class:`UserIdentity` of each of ``user_ids`` in a ``/keys/query`` answer.

    A user the answer does not mention gets an empty identity (no keys, no devices).
    """
    result: dict[str, UserIdentity] = {}
    for user_id in sorted(set(user_ids)):
        ident = UserIdentity(user_id=user_id)
        for usage, attr in (
            ("master_keys", "master"),
            ("self_signing_keys", "self_signing"),
            ("user_signing_keys", "user_signing"),
        ):
            section = payload.get(usage)
            if isinstance(section, Mapping) and isinstance(section.get(user_id), dict):
                setattr(ident, attr, section[user_id])
        device_keys = payload.get("device_keys")
        devices = device_keys.get(user_id) if isinstance(device_keys, Mapping) else None
        if isinstance(devices, Mapping):
            ident.devices = {k: v for k, v in devices.items() if isinstance(v, dict)}
        result[user_id] = ident
    return result


async def query_cross_signing(
    client: AsyncClient, user_ids: Iterable[str]
) -> dict[str, UserIdentity]:
    """Raw ``/keys/query`` for ``user_ids``: their cross-signing keys and device keys.

    nio's own ``keys_query`` drops the cross-signing part of the answer, so trust
    decisions use this instead.
    """
    users = sorted(set(user_ids))
    if not users:
        return {}
    return identities_from_keys(await query_keys(client, users), users)


# --------------------------------------------------------------------------- our keys


@dataclass
class CrossSigningKeys:
    """Our private cross-signing keys (ed25519 seeds)."""

    user_id: str
    master: nacl.signing.SigningKey
    self_signing: nacl.signing.SigningKey
    user_signing: nacl.signing.SigningKey | None

    @classmethod
    def generate(cls, user_id: str) -> CrossSigningKeys:
        return cls(
            user_id=user_id,
            master=nacl.signing.SigningKey.generate(),
            self_signing=nacl.signing.SigningKey.generate(),
            user_signing=nacl.signing.SigningKey.generate(),
        )

    @property
    def master_pub(self) -> str:
        return public_key_b64(self.master)

    @property
    def self_signing_pub(self) -> str:
        return public_key_b64(self.self_signing)

    def to_json(self) -> dict[str, str]:
        data = {
            "user_id": self.user_id,
            "master": unpadded_b64encode(bytes(self.master)),
            "self_signing": unpadded_b64encode(bytes(self.self_signing)),
        }
        if self.user_signing is not None:
            data["user_signing"] = unpadded_b64encode(bytes(self.user_signing))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CrossSigningKeys:
        usk = data.get("user_signing")
        return cls(
            user_id=str(data["user_id"]),
            master=nacl.signing.SigningKey(b64decode_lenient(str(data["master"]))),
            self_signing=nacl.signing.SigningKey(b64decode_lenient(str(data["self_signing"]))),
            user_signing=(
                nacl.signing.SigningKey(b64decode_lenient(str(usk))) if usk is not None else None
            ),
        )

    def public_key_objects(self) -> dict[str, JsonDict]:
        """The three public key objects, the sub-keys signed by the master key."""

        def obj(usage: str, key: nacl.signing.SigningKey) -> JsonDict:
            pub = public_key_b64(key)
            return {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}

        master_pub = self.master_pub
        out = {"master_key": obj("master", self.master)}
        out["self_signing_key"] = sign_json(
            obj("self_signing", self.self_signing),
            user_id=self.user_id,
            key_id=master_pub,
            signing_key=self.master,
        )
        if self.user_signing is not None:
            out["user_signing_key"] = sign_json(
                obj("user_signing", self.user_signing),
                user_id=self.user_id,
                key_id=master_pub,
                signing_key=self.master,
            )
        return out


@dataclass(frozen=True)
class CrossSigningStatus:
    """Outcome of :meth:`CrossSigning.ensure`, for banners and ``doctor``."""

    user_id: str
    device_id: str
    master_key: str
    created: bool  # we made a new identity for the account
    imported: bool  # we read the keys from secret storage with the recovery key
    device_newly_signed: bool
    device_cross_signed: bool  # confirmed through /keys/query after signing
    recovery_key: str | None = None  # only when we just created secret storage: show it once


class CrossSigning:
    """Keeps one nio device of an account cross-signed.

    ``client`` must be logged in with its device keys uploaded (nio does that
    on the first sync or ``keys_upload``). ``key_file`` holds the sealed private
    keys; ``sealer`` seals them.
    """

    def __init__(self, client: AsyncClient, key_file: Path, sealer: Sealer) -> None:
        self._client = client
        self._key_file = Path(key_file)
        self._sealer = sealer
        self._keys: CrossSigningKeys | None = None

    @property
    def keys(self) -> CrossSigningKeys | None:
        return self._keys

    # ---- persistence (small files: sync I/O is fine and keeps it atomic)

    def _load_sealed(self) -> CrossSigningKeys | None:
        try:
            sealed = self._key_file.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(self._sealer.open_text(sealed, context=SEAL_CONTEXT))
            keys = CrossSigningKeys.from_json(data)
        except SealingError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CrossSigningError(
                f"the cross-signing key file {self._key_file} is damaged"
            ) from exc
        if keys.user_id != self._client.user_id:
            raise CrossSigningError(
                f"the cross-signing key file {self._key_file} belongs to another account"
            )
        return keys

    def _save_sealed(self, keys: CrossSigningKeys) -> None:
        self._key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._key_file.with_name(self._key_file.name + ".tmp")
        sealed = self._sealer.seal(json.dumps(keys.to_json()), context=SEAL_CONTEXT)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(sealed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._key_file)

    # ---- main entry

    async def ensure(
        self,
        *,
        password: str | None,
        recovery_key: str | None = None,
        create_secret_storage: bool = True,
    ) -> CrossSigningStatus:
        """Make sure the account has cross-signing and our device is signed by it.

        Idempotent; safe at every start. ``password`` is only needed when the
        homeserver asks for user-interactive auth to publish new keys;
        ``recovery_key`` only when the account already has an identity we do
        not hold the keys of. On a wrong recovery key nothing is changed.

        When we create the identity and ``create_secret_storage`` is set, the
        private keys also go to secret storage, and the status carries the new
        recovery key (shown to the user once): with it a second machine, or
        Element, can sign its own device with the same identity.
        """
        client = self._client
        user_id, device_id = client.user_id, client.device_id
        if not user_id or not device_id:
            raise CrossSigningError("the Matrix client is not logged in")
        ident = (await query_cross_signing(client, [user_id]))[user_id]
        published_master = ident.master_key
        created = imported = False
        new_recovery_key: str | None = None

        keys = self._load_sealed()
        if keys is not None and published_master not in (None, keys.master_pub):
            logger.warning("cross-signing identity of this account was replaced elsewhere")
            keys = None  # our file is stale: the account has a new identity
            if recovery_key is None:
                raise CrossSigningError(
                    "This account's security keys were reset in another app. Sign in again "
                    "with the account's recovery key to sign this device."
                )

        if keys is None and published_master is None:
            keys = CrossSigningKeys.generate(user_id)
            # Saved before publishing: a crash in between leaves keys we can publish on
            # the next start, never a published identity whose private keys are lost.
            self._save_sealed(keys)
            await self._upload_keys(keys, password)
            created = True
            logger.info("created cross-signing keys for this account")
            if create_secret_storage:
                new_recovery_key = await self._store_in_secret_storage(keys)
        elif keys is None:
            if recovery_key is None:
                raise CrossSigningError(
                    "This account already has security keys (set up in another app). "
                    "Enter the account's recovery key so this device can be verified."
                )
            keys = await self._import_from_secret_storage(ident, recovery_key)
            self._save_sealed(keys)
            imported = True
            logger.info("imported cross-signing keys from secret storage")
        elif published_master is None:
            # We hold keys the server forgot (e.g. a reset homeserver): publish them again.
            await self._upload_keys(keys, password)
        self._keys = keys

        ident = (await query_cross_signing(client, [user_id]))[user_id]
        newly_signed = False
        if not ident.is_device_signed(device_id):
            await self._sign_device(ident, device_id, keys)
            newly_signed = True
            ident = (await query_cross_signing(client, [user_id]))[user_id]
        signed = ident.is_device_signed(device_id) and ident.master_key == keys.master_pub
        if not signed:
            logger.warning("our device is still not cross-signed after signing it")
        return CrossSigningStatus(
            user_id=user_id,
            device_id=device_id,
            master_key=keys.master_pub,
            created=created,
            imported=imported,
            device_newly_signed=newly_signed,
            device_cross_signed=signed,
            recovery_key=new_recovery_key,
        )

    async def is_device_cross_signed(self, user_id: str, device_id: str) -> bool:
        """True if the server publishes a valid master -> self-signing -> device chain."""
        ident = (await query_cross_signing(self._client, [user_id])).get(user_id)
        return ident is not None and ident.is_device_signed(device_id)

    # ---- steps

    async def _upload_keys(self, keys: CrossSigningKeys, password: str | None) -> None:
        body: JsonDict = dict(keys.public_key_objects())
        status, payload = await raw_request(
            self._client, "POST", "/keys/device_signing/upload", body
        )
        if status == 401 and "flows" in payload:
            flows = payload.get("flows") or []
            has_password = any(
                "m.login.password" in (f.get("stages") or []) for f in flows if isinstance(f, dict)
            )
            if password is None or not has_password:
                raise CrossSigningError(
                    "The homeserver wants the account password to publish security keys, "
                    "and none was given."
                )
            body["auth"] = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self._client.user_id},
                "password": password,
                "session": payload.get("session"),
            }
            status, payload = await raw_request(
                self._client, "POST", "/keys/device_signing/upload", body
            )
            if status == 401:
                raise CrossSigningError(
                    "The homeserver did not accept the account password for publishing "
                    "security keys."
                )
        _check(status, payload, "publish cross-signing keys")

    async def _sign_device(
        self, ident: UserIdentity, device_id: str, keys: CrossSigningKeys
    ) -> None:
        if ident.device_ed25519(device_id) is None:
            raise CrossSigningError(
                "this device's keys are not on the homeserver yet; upload them before signing"
            )
        device = {k: v for k, v in ident.devices[device_id].items() if k != "signatures"}
        signed = sign_json(
            device,
            user_id=keys.user_id,
            key_id=keys.self_signing_pub,
            signing_key=keys.self_signing,
        )
        status, payload = await raw_request(
            self._client,
            "POST",
            "/keys/signatures/upload",
            {keys.user_id: {device_id: signed}},
        )
        payload = _check(status, payload, "publish the device signature")
        failures = payload.get("failures") or {}
        if failures:
            logger.warning("device signature rejected: %s", json.dumps(failures)[:300])
            raise CrossSigningError("the homeserver rejected this device's signature")
        logger.info("signed device %s with the self-signing key", device_id)

    async def _store_in_secret_storage(self, keys: CrossSigningKeys) -> str | None:
        """Put our private keys into new secret storage; return its recovery key.

        An account that already has a default secret storage key (set up by
        another app) is left alone: we cannot add to it without its key.
        """
        if await get_account_data(self._client, DEFAULT_KEY_TYPE) is not None:
            logger.info("account already has secret storage; not adding our keys to it")
            return None
        key = os.urandom(32)
        key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(32))
        await put_account_data(self._client, KEY_TYPE_PREFIX + key_id, key_description(key))
        stored = {
            "m.cross_signing.master": keys.master,
            "m.cross_signing.self_signing": keys.self_signing,
            "m.cross_signing.user_signing": keys.user_signing,
        }
        for name, signing_key in stored.items():
            if signing_key is None:
                continue
            encrypted = encrypt_secret(key, name, unpadded_b64encode(bytes(signing_key)))
            await put_account_data(self._client, name, {"encrypted": {key_id: encrypted.to_json()}})
        await put_account_data(self._client, DEFAULT_KEY_TYPE, {"key": key_id})
        logger.info("stored cross-signing keys in new secret storage")
        return encode_recovery_key(key)

    async def _import_from_secret_storage(
        self, ident: UserIdentity, recovery_key: str
    ) -> CrossSigningKeys:
        key = decode_recovery_key(recovery_key)
        default = await get_account_data(self._client, DEFAULT_KEY_TYPE)
        key_id = default.get("key") if default else None
        if not isinstance(key_id, str):
            raise SecretStorageError(
                "This account has no secure storage, so its recovery key cannot be used. "
                "Verify this device from your other app instead."
            )
        description = await get_account_data(self._client, KEY_TYPE_PREFIX + key_id)
        if description is None:
            raise SecretStorageError("this account's secure storage key is missing")
        if not check_key(key, description):
            raise RecoveryKeyError(
                "This recovery key does not belong to this account. Check it and try again."
            )

        async def secret(name: str) -> nacl.signing.SigningKey | None:
            stored = await get_account_data(self._client, name)
            encrypted = (stored or {}).get("encrypted", {}).get(key_id)
            if not isinstance(encrypted, Mapping):
                return None
            seed = b64decode_lenient(decrypt_secret(key, name, encrypted))
            return nacl.signing.SigningKey(seed)

        ssk = await secret("m.cross_signing.self_signing")
        master = await secret("m.cross_signing.master")
        usk = await secret("m.cross_signing.user_signing")
        if ssk is None:
            raise SecretStorageError(
                "This account's secure storage holds no self-signing key. "
                "Verify this device from your other app instead."
            )
        if public_key_b64(ssk) != ident.self_signing_key:
            raise SecretStorageError(
                "The keys in secure storage do not match this account's current identity. "
                "Reset or re-save them in your other app."
            )
        if master is None or public_key_b64(master) != ident.master_key:
            # Signing our device needs only the self-signing key; keep the
            # published master's place with a key we cannot use to sign.
            raise SecretStorageError(
                "This account's secure storage does not hold its master key. "
                "Verify this device from your other app instead."
            )
        return CrossSigningKeys(
            user_id=ident.user_id, master=master, self_signing=ssk, user_signing=usk
        )
