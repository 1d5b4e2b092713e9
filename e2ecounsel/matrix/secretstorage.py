"""Secret storage (SSSS) the way Element writes it: recovery keys and ``aes-hmac-sha2`` secrets.

A counselor who set up cross-signing in Element holds a *recovery key* (``EsTc …``).
Element stores the cross-signing private keys in the account data, encrypted with a
key derived from it. Reading them back lets our own device be signed by the same
identity instead of creating a new one (which would make every contact see an
identity change).

Only ``m.secret_storage.v1.aes-hmac-sha2`` keys given as a recovery key are supported;
that is what Element, matrix-js-sdk and the Rust SDK create by default.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2ecounsel.errors import E2ECounselError
from e2ecounsel.matrix.canonical import b64decode_lenient, unpadded_b64encode

AES_HMAC_SHA2 = "m.secret_storage.v1.aes-hmac-sha2"
DEFAULT_KEY_TYPE = "m.secret_storage.default_key"
KEY_TYPE_PREFIX = "m.secret_storage.key."

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_RECOVERY_PREFIX = bytes([0x8B, 0x01])
KEY_SIZE = 32


class RecoveryKeyError(E2ECounselError):
    """The recovery key is malformed or does not open this account's secret storage."""


class SecretStorageError(E2ECounselError):
    """The account's secret storage is missing, unsupported or damaged."""


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (leading zero bytes become ``1``)."""
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises ``ValueError`` on a character outside the alphabet."""
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError("not base58")
        number = number * 58 + _B58_INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


def _parity(data: bytes) -> int:
    result = 0
    for byte in data:
        result ^= byte
    return result


def encode_recovery_key(key: bytes) -> str:
    """Element's display form of a 32-byte secret storage key: base58, groups of four."""
    if len(key) != KEY_SIZE:
        raise ValueError("a secret storage key is 32 bytes")
    raw = _RECOVERY_PREFIX + key
    encoded = b58encode(raw + bytes([_parity(raw)]))
    return " ".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def decode_recovery_key(text: str) -> bytes:
    """The 32-byte key inside a recovery key; whitespace is ignored.

    Raises :class:`RecoveryKeyError` with a message safe to show the user when the
    text is not a recovery key at all (typo, pasted passphrase, truncated).
    """
    compact = "".join(text.split())
    bad = RecoveryKeyError(
        "This is not a valid recovery key. Copy it again from where you saved it "
        "(it starts with 'Es' and has 12 groups of 4 characters)."
    )
    try:
        raw = b58decode(compact)
    except ValueError:
        raise bad from None
    if len(raw) != len(_RECOVERY_PREFIX) + KEY_SIZE + 1:
        raise bad
    if raw[:2] != _RECOVERY_PREFIX or _parity(raw[:-1]) != raw[-1]:
        raise bad
    return raw[2:-1]


def _derive(key: bytes, name: str) -> tuple[bytes, bytes]:
    """HKDF-SHA256 (salt: 32 zero bytes, info: the secret name) -> AES key, HMAC key."""
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=bytes(32), info=name.encode("utf-8")
    ).derive(key)
    return okm[:32], okm[32:]


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv))
    ctx = cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


@dataclass(frozen=True)
class EncryptedSecret:
    """One secret as stored in account data under ``encrypted.<key id>``."""

    iv: str
    ciphertext: str
    mac: str

    def to_json(self) -> dict[str, str]:
        return {"iv": self.iv, "ciphertext": self.ciphertext, "mac": self.mac}


def encrypt_secret(
    key: bytes, name: str, plaintext: str, *, iv: bytes | None = None
) -> EncryptedSecret:
    """Encrypt ``plaintext`` for storage under secret ``name`` (spec: aes-hmac-sha2)."""
    if iv is None:
        iv_arr = bytearray(os.urandom(16))
        iv_arr[8] &= 0x7F  # clear bit 63 so the 64-bit counter cannot wrap
        iv = bytes(iv_arr)
    aes_key, mac_key = _derive(key, name)
    ciphertext = _aes_ctr(aes_key, iv, plaintext.encode("utf-8"))
    mac = hmac.new(mac_key, ciphertext, hashlib.sha256).digest()
    return EncryptedSecret(
        iv=unpadded_b64encode(iv),
        ciphertext=unpadded_b64encode(ciphertext),
        mac=unpadded_b64encode(mac),
    )


def decrypt_secret(key: bytes, name: str, encrypted: Mapping[str, Any]) -> str:
    """Decrypt one stored secret; raises :class:`RecoveryKeyError` if the MAC does not match."""
    try:
        iv = b64decode_lenient(str(encrypted["iv"]))
        ciphertext = b64decode_lenient(str(encrypted["ciphertext"]))
        mac = b64decode_lenient(str(encrypted["mac"]))
    except (KeyError, ValueError) as exc:
        raise SecretStorageError(f"the stored secret {name} is damaged") from exc
    aes_key, mac_key = _derive(key, name)
    expected = hmac.new(mac_key, ciphertext, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise RecoveryKeyError(
            "This recovery key does not unlock this account's secure storage. "
            "Check that it belongs to this account."
        )
    try:
        return _aes_ctr(aes_key, iv, ciphertext).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretStorageError(f"the stored secret {name} is damaged") from exc


def key_check(key: bytes, *, iv: bytes | None = None) -> dict[str, str]:
    """The ``iv``/``mac`` pair a key description carries so clients can test a key."""
    check = encrypt_secret(key, "", "\0" * 32, iv=iv)
    return {"iv": check.iv, "mac": check.mac}


def check_key(key: bytes, description: Mapping[str, Any]) -> bool:
    """True if ``key`` is the key described by ``m.secret_storage.key.<id>``.

    Without ``iv``/``mac`` in the description (very old accounts) we cannot tell
    and say True; decrypting a secret then checks its own MAC.
    """
    if description.get("algorithm") != AES_HMAC_SHA2:
        return False
    iv_text, mac_text = description.get("iv"), description.get("mac")
    if not isinstance(iv_text, str) or not isinstance(mac_text, str):
        return True
    try:
        iv = b64decode_lenient(iv_text)
        mac = b64decode_lenient(mac_text)
    except ValueError:
        return False
    ours = b64decode_lenient(key_check(key, iv=iv)["mac"])
    return hmac.compare_digest(ours, mac)


def key_description(key: bytes, *, name: str = "") -> dict[str, Any]:
    """A ``m.secret_storage.key.<id>`` body for ``key`` (used by tests and for new storage)."""
    body: dict[str, Any] = {"algorithm": AES_HMAC_SHA2, **key_check(key)}
    if name:
        body["name"] = name
    return body
