"""Canonical JSON and ed25519 signatures the way the Matrix spec defines them.

Cross-signing only interoperates if every client serialises a key object to the
exact same bytes before signing it: keys sorted, no whitespace, UTF-8 without
escaping, and ``signatures``/``unsigned`` removed. Any difference makes other
clients (Element, matrix-js-sdk) reject the signature silently, so this module
is deliberately small and tested against known vectors.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Mapping
from typing import Any

import nacl.exceptions
import nacl.signing

JsonDict = dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """The spec's canonical JSON encoding of ``value`` (sorted keys, compact, UTF-8)."""
    return json.dumps(
        value,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
        allow_nan=False,
    ).encode("utf-8")


def unpadded_b64encode(data: bytes) -> str:
    """Unpadded standard base64, as Matrix uses for keys and signatures."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode_lenient(text: str) -> bytes:
    """Decode standard or URL-safe base64 with or without padding.

    Element pads some values (secret storage) and not others (keys); accepting
    both avoids a class of "works with one client only" bugs.
    """
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not valid base64") from exc


def signable_bytes(obj: Mapping[str, Any]) -> bytes:
    """The bytes that get signed: the object without ``signatures`` and ``unsigned``."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return canonical_json(stripped)


def public_key_b64(signing_key: nacl.signing.SigningKey) -> str:
    """The unpadded base64 public ed25519 key, which is also the key's id in Matrix."""
    return unpadded_b64encode(bytes(signing_key.verify_key))


def sign_json(
    obj: Mapping[str, Any], *, user_id: str, key_id: str, signing_key: nacl.signing.SigningKey
) -> JsonDict:
    """Return a copy of ``obj`` with our signature added under ``signatures``.

    ``key_id`` is the part after ``ed25519:`` (a device id or a public key).
    Signatures already present are kept, so an object can carry several.
    """
    signed: JsonDict = copy.deepcopy(dict(obj))
    signature = signing_key.sign(signable_bytes(obj)).signature
    signed.setdefault("signatures", {}).setdefault(user_id, {})[f"ed25519:{key_id}"] = (
        unpadded_b64encode(signature)
    )
    signed.pop("unsigned", None)
    return signed


def verify_signature(
    obj: Mapping[str, Any], *, user_id: str, key_id: str, public_key_b64: str
) -> bool:
    """True if ``obj`` carries a valid signature by ``public_key_b64`` under ``key_id``.

    A missing signature, a malformed key or a bad signature all give False:
    callers only need to know whether to trust the object.
    """
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    user_sigs = signatures.get(user_id)
    if not isinstance(user_sigs, Mapping):
        return False
    sig_text = user_sigs.get(f"ed25519:{key_id}")
    if not isinstance(sig_text, str):
        return False
    try:
        verify_key = nacl.signing.VerifyKey(b64decode_lenient(public_key_b64))
        verify_key.verify(signable_bytes(obj), b64decode_lenient(sig_text))
    except (ValueError, nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError):
        return False
    return True
