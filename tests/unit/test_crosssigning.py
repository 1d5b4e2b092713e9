"""Unit tests for canonical JSON, signatures, recovery keys, secret storage and identities.

Reference values come from independent implementations: ``canonicaljson`` and
``signedjson`` (Synapse's libraries) and vectors produced with matrix-js-sdk 43
(``encodeRecoveryKey``, ``calculateKeyCheck``, ``encryptAESSecretStorageItem``).
"""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2ecounsel.errors import SealingError
from e2ecounsel.matrix.canonical import (
    b64decode_lenient,
    canonical_json,
    public_key_b64,
    sign_json,
    unpadded_b64encode,
    verify_signature,
)
from e2ecounsel.matrix.crosssigning import CrossSigning, CrossSigningKeys, UserIdentity
from e2ecounsel.matrix.secretstorage import (
    RecoveryKeyError,
    check_key,
    decode_recovery_key,
    decrypt_secret,
    encode_recovery_key,
    encrypt_secret,
    key_description,
)
from e2ecounsel.matrix.trust import IdentityChange, MasterKeyStore, TrustPolicy
from e2ecounsel.sealing import Sealer

# Produced by matrix-js-sdk 43 for key bytes (i * 7 + 3) for i in 0..31.
JS_KEY = bytes((i * 7 + 3) & 0xFF for i in range(32))
JS_RECOVERY_KEY = "EsT1 t3bE JPZs Bz9H xApv jfQh PY9X gmGM bhbN Kz2L 2t9n aeKB"
JS_KEY_CHECK = {
    "iv": "AAAAAAAAAAAAAAAAAAAAAA==",
    "mac": "7dkQs/n4sEMbIDbUPyTACGTctrSgbJToeF3VXyeNSoo=",
}
JS_SECRET_NAME = "m.cross_signing.self_signing"
JS_SECRET_PLAINTEXT = "c2VjcmV0IHNlZWQgYmFzZTY0"
JS_SECRET = {
    "iv": "ZXhhbXBsZSBpdiB2YWx1ZQ==",
    "ciphertext": "N+uZ+GcCkAAKe5TMfgrd8SpwLmi2MyuZ",
    "mac": "huNukc6HSWxIrw5R84wXPqLpgLjaoXPocYeKLPYoAWM=",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


# ---------------------------------------------------------------- canonical JSON and signatures


def test_canonical_json_spec_examples() -> None:
    assert canonical_json({}) == b"{}"
    assert canonical_json({"one": 1, "two": "Two"}) == b'{"one":1,"two":"Two"}'
    assert canonical_json({"b": "2", "a": "1"}) == b'{"a":"1","b":"2"}'
    assert canonical_json({"a": "日本語"}) == '{"a":"日本語"}'.encode()
    assert canonical_json({"本": 2, "日": 1}) == '{"日":1,"本":2}'.encode()
    assert canonical_json({"a": "\u0000"}) == b'{"a":"\\u0000"}'


@given(json_values)
def test_canonical_json_matches_synapse(value: object) -> None:
    canonicaljson = pytest.importorskip("canonicaljson")  # ships with matrix-synapse
    assert canonical_json(value) == canonicaljson.encode_canonical_json(value)


def test_signature_matches_signedjson_both_ways() -> None:
    pytest.importorskip("signedjson")  # ships with matrix-synapse
    import signedjson.key
    import signedjson.sign

    seed = bytes(range(32))
    ours = nacl.signing.SigningKey(seed)
    theirs = signedjson.key.decode_signing_key_base64("ed25519", "DEV", unpadded_b64encode(seed))
    obj = {"user_id": "@a:x", "keys": {"ed25519:DEV": "k"}, "unsigned": {"drop": True}}
    signed = sign_json(obj, user_id="@a:x", key_id="DEV", signing_key=ours)
    expected = signedjson.sign.sign_json(json.loads(json.dumps(obj)), "@a:x", theirs)
    assert signed["signatures"] == expected["signatures"]
    assert "unsigned" not in signed
    signedjson.sign.verify_signed_json(signed, "@a:x", signedjson.key.get_verify_key(theirs))
    assert verify_signature(
        expected, user_id="@a:x", key_id="DEV", public_key_b64=public_key_b64(ours)
    )


def test_verify_signature_rejects_changes_and_wrong_keys() -> None:
    key = nacl.signing.SigningKey.generate()
    other = nacl.signing.SigningKey.generate()
    pub = public_key_b64(key)
    signed = sign_json({"a": 1}, user_id="@u:x", key_id=pub, signing_key=key)
    assert verify_signature(signed, user_id="@u:x", key_id=pub, public_key_b64=pub)
    # extra signatures and unsigned data are not covered by the signature
    extra = sign_json(signed, user_id="@v:x", key_id="D", signing_key=other)
    extra["unsigned"] = {"x": 1}
    assert verify_signature(extra, user_id="@u:x", key_id=pub, public_key_b64=pub)
    assert not verify_signature({**signed, "a": 2}, user_id="@u:x", key_id=pub, public_key_b64=pub)
    assert not verify_signature(
        signed, user_id="@u:x", key_id=pub, public_key_b64=public_key_b64(other)
    )
    assert not verify_signature(signed, user_id="@w:x", key_id=pub, public_key_b64=pub)
    assert not verify_signature(signed, user_id="@u:x", key_id=pub, public_key_b64="%%%")


def test_base64_lenient() -> None:
    assert unpadded_b64encode(b"ab") == "YWI"
    assert b64decode_lenient("YWI") == b"ab"
    assert b64decode_lenient("YWI=") == b"ab"
    with pytest.raises(ValueError):
        b64decode_lenient("Y!WI")


# ---------------------------------------------------------------- recovery key and secret storage


def test_recovery_key_matches_matrix_js_sdk() -> None:
    assert encode_recovery_key(JS_KEY) == JS_RECOVERY_KEY
    assert decode_recovery_key(JS_RECOVERY_KEY) == JS_KEY
    assert decode_recovery_key(JS_RECOVERY_KEY.replace(" ", "") + "\n") == JS_KEY


@given(st.binary(min_size=32, max_size=32))
def test_recovery_key_round_trip(key: bytes) -> None:
    text = encode_recovery_key(key)
    assert text.startswith("Es")
    assert decode_recovery_key(text) == key


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not a key at all",
        JS_RECOVERY_KEY[:-1],  # truncated
        JS_RECOVERY_KEY[:-1] + ("C" if JS_RECOVERY_KEY[-1] != "C" else "D"),  # parity broken
        JS_RECOVERY_KEY.replace("E", "0", 1),  # 0 is not base58
    ],
)
def test_malformed_recovery_key_is_a_clear_error(bad: str) -> None:
    with pytest.raises(RecoveryKeyError, match="not a valid recovery key"):
        decode_recovery_key(bad)


def test_key_check_and_secret_match_matrix_js_sdk() -> None:
    assert check_key(JS_KEY, {"algorithm": "m.secret_storage.v1.aes-hmac-sha2", **JS_KEY_CHECK})
    assert not check_key(
        bytes(32), {"algorithm": "m.secret_storage.v1.aes-hmac-sha2", **JS_KEY_CHECK}
    )
    assert decrypt_secret(JS_KEY, JS_SECRET_NAME, JS_SECRET) == JS_SECRET_PLAINTEXT
    iv = b64decode_lenient(JS_SECRET["iv"])
    ours = encrypt_secret(JS_KEY, JS_SECRET_NAME, JS_SECRET_PLAINTEXT, iv=iv)
    assert b64decode_lenient(ours.ciphertext) == b64decode_lenient(JS_SECRET["ciphertext"])
    assert b64decode_lenient(ours.mac) == b64decode_lenient(JS_SECRET["mac"])


def test_secret_with_wrong_key_or_name_is_refused() -> None:
    with pytest.raises(RecoveryKeyError, match="does not unlock"):
        decrypt_secret(bytes(32), JS_SECRET_NAME, JS_SECRET)
    with pytest.raises(RecoveryKeyError):
        decrypt_secret(JS_KEY, "m.cross_signing.master", JS_SECRET)


def test_new_key_description_checks_its_key() -> None:
    key = bytes(range(32))
    desc = key_description(key)
    assert check_key(key, desc)
    assert not check_key(JS_KEY, desc)
    iv = b64decode_lenient(encrypt_secret(key, "x", "y").iv)
    assert iv[8] & 0x80 == 0  # bit 63 cleared, as the spec asks


# ---------------------------------------------------------------- identities and key chain


def _identity(keys: CrossSigningKeys, device_key: nacl.signing.SigningKey) -> UserIdentity:
    objs = keys.public_key_objects()
    pub = public_key_b64(device_key)
    device = sign_json(
        {
            "user_id": keys.user_id,
            "device_id": "DEV",
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {"ed25519:DEV": pub, "curve25519:DEV": "curve"},
        },
        user_id=keys.user_id,
        key_id="DEV",
        signing_key=device_key,
    )
    return UserIdentity(
        user_id=keys.user_id,
        master=objs["master_key"],
        self_signing=objs["self_signing_key"],
        user_signing=objs["user_signing_key"],
        devices={"DEV": device},
    )


def test_device_chain_master_self_signing_device() -> None:
    keys = CrossSigningKeys.generate("@c:x")
    device_key = nacl.signing.SigningKey.generate()
    ident = _identity(keys, device_key)
    assert ident.master_key == keys.master_pub
    assert ident.self_signing_key == keys.self_signing_pub
    assert not ident.is_device_signed("DEV")  # only self-signed so far

    ident.devices["DEV"] = sign_json(
        ident.devices["DEV"],
        user_id="@c:x",
        key_id=keys.self_signing_pub,
        signing_key=keys.self_signing,
    )
    assert ident.is_device_signed("DEV")
    assert not ident.is_device_signed("OTHER")


def test_device_chain_breaks_on_foreign_self_signing_key() -> None:
    keys = CrossSigningKeys.generate("@c:x")
    rogue = CrossSigningKeys.generate("@c:x")
    device_key = nacl.signing.SigningKey.generate()
    ident = _identity(keys, device_key)
    # a self-signing key not signed by the published master key
    ident.self_signing = rogue.public_key_objects()["self_signing_key"]
    ident.devices["DEV"] = sign_json(
        ident.devices["DEV"],
        user_id="@c:x",
        key_id=rogue.self_signing_pub,
        signing_key=rogue.self_signing,
    )
    assert ident.self_signing_key is None
    assert not ident.is_device_signed("DEV")


def test_device_chain_breaks_on_tampered_device_keys() -> None:
    keys = CrossSigningKeys.generate("@c:x")
    ident = _identity(keys, nacl.signing.SigningKey.generate())
    signed = sign_json(
        ident.devices["DEV"],
        user_id="@c:x",
        key_id=keys.self_signing_pub,
        signing_key=keys.self_signing,
    )
    signed["keys"] = {**signed["keys"], "curve25519:DEV": "swapped"}
    ident.devices["DEV"] = signed
    assert not ident.is_device_signed("DEV")


def test_keys_round_trip_through_sealed_json() -> None:
    keys = CrossSigningKeys.generate("@c:x")
    again = CrossSigningKeys.from_json(json.loads(json.dumps(keys.to_json())))
    assert again.master_pub == keys.master_pub
    assert again.self_signing_pub == keys.self_signing_pub
    assert again.user_signing is not None and keys.user_signing is not None
    assert bytes(again.user_signing) == bytes(keys.user_signing)


class _FakeClient:
    user_id = "@c:x"
    device_id = "DEV"
    access_token = "t"


def test_sealed_key_file_needs_the_sealing_key(tmp_path: Path) -> None:
    path = tmp_path / "cs.sealed"
    keys = CrossSigningKeys.generate("@c:x")
    cs = CrossSigning(_FakeClient(), path, Sealer(bytes(32)))
    cs._save_sealed(keys)
    assert b"master" not in path.read_bytes()
    loaded = cs._load_sealed()
    assert loaded is not None and loaded.master_pub == keys.master_pub
    wrong = CrossSigning(_FakeClient(), path, Sealer(bytes([1]) * 32))
    with pytest.raises(SealingError):
        wrong._load_sealed()


# ---------------------------------------------------------------- trust policy bits


def test_master_key_store_persists(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    store = MasterKeyStore(path)
    store.set("@a:x", "K1")
    assert MasterKeyStore(path).get("@a:x") == "K1"


def test_identity_change_is_reported_once(tmp_path: Path) -> None:
    seen: list[IdentityChange] = []
    policy = TrustPolicy(known_identities=tmp_path / "k.json", on_identity_change=seen.append)
    first = CrossSigningKeys.generate("@a:x")
    second = CrossSigningKeys.generate("@a:x")
    from e2ecounsel.matrix.trust import TrustReport

    for keys in (first, first, second, second):
        ident = UserIdentity(user_id="@a:x", master=keys.public_key_objects()["master_key"])
        policy._track_master(ident, TrustReport(room_id=None))
    assert seen == [IdentityChange("@a:x", first.master_pub, second.master_pub)]


def test_unknown_trust_mode_is_a_config_error() -> None:
    from e2ecounsel.errors import ConfigError

    with pytest.raises(ConfigError, match="trust mode"):
        TrustPolicy("trust-everyone")  # type: ignore[arg-type]


def test_untrusted_event_shapes() -> None:
    policy = TrustPolicy()

    class Ev:
        decrypted = True
        sender = "@a:x"
        sender_key = "curve"

    assert not policy.is_event_trusted(Ev())
    policy._signed["@a:x"] = {"DEV": "curve"}
    assert policy.is_event_trusted(Ev())
    Ev.decrypted = False
    assert not policy.is_event_trusted(Ev())
