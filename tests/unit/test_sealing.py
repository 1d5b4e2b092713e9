"""Sealing of data at rest: keys, round trips, tamper and context checks."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ecounsel.errors import ConfigError, SealingError
from e2ecounsel.sealing import (
    KEY_ENV,
    KEY_FILE_ENV,
    KEY_SIZE,
    SALT_SIZE,
    Sealer,
    derive_passphrase_key,
    derive_subkey,
    load_or_create_key,
    new_salt,
    placement_of_sealing_key,
)

KEY = bytes(range(1, KEY_SIZE + 1))
OTHER_KEY = bytes(range(2, KEY_SIZE + 2))


def test_round_trip_text_and_bytes() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("Saya merasa cemas", context="engagement.topic")
    assert b"cemas" not in sealed
    assert sealer.open_text(sealed, context="engagement.topic") == "Saya merasa cemas"

    raw = bytes(range(256))
    assert sealer.open(sealer.seal(raw, context="blob"), context="blob") == raw


def test_same_value_seals_differently_each_time() -> None:
    # A fresh nonce per seal: equal plaintexts must not be recognisable in the DB.
    sealer = Sealer(KEY)
    assert sealer.seal("same", context="c") != sealer.seal("same", context="c")


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2048), context=st.text(min_size=1, max_size=80))
def test_round_trip_any_bytes(data: bytes, context: str) -> None:
    sealer = Sealer(KEY)
    assert sealer.open(sealer.seal(data, context=context), context=context) == data


def test_wrong_key_is_refused() -> None:
    sealed = Sealer(KEY).seal("secret", context="c")
    with pytest.raises(SealingError, match="wrong sealing key"):
        Sealer(OTHER_KEY).open(sealed, context="c")


@pytest.mark.parametrize("position", [6, 10, 30, -17, -1])
def test_tampered_byte_is_refused(position: int) -> None:
    sealer = Sealer(KEY)
    sealed = bytearray(sealer.seal("secret value", context="c"))
    sealed[position] ^= 0x01
    with pytest.raises(SealingError):
        sealer.open(bytes(sealed), context="c")


def test_truncated_or_foreign_data_is_refused() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("secret value", context="c")
    with pytest.raises(SealingError):
        sealer.open(sealed[:-1], context="c")
    with pytest.raises(SealingError, match="not sealed data"):
        sealer.open(b"plain text in a column", context="c")


@pytest.mark.parametrize(
    ("sealed_as", "opened_as"),
    [
        ("engagement.pseudonym", "engagement.topic"),
        # Long contexts that share a prefix must still be told apart.
        ("engagement.pseudonym", "engagement.presenting_problem"),
        ("counselor_note.body.v1", "counselor_note.body.v2"),
        ("engagement.topic", ""),
    ],
)
def test_value_does_not_open_under_another_context(sealed_as: str, opened_as: str) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("moved value", context=sealed_as)
    with pytest.raises(SealingError):
        sealer.open(sealed, context=opened_as)


def test_key_file_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "sealing.key"
    first = load_or_create_key(path, env={})
    assert len(first) == KEY_SIZE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_key(path, env={})
    assert second == first
    # Data sealed before a restart opens after it.
    sealed = Sealer(first).seal("kept", context="c")
    assert Sealer(second).open_text(sealed, context="c") == "kept"


def test_env_key_wins_over_key_file(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"
    from_file = load_or_create_key(path, env={})
    assert load_or_create_key(path, env={KEY_ENV: OTHER_KEY.hex()}) == OTHER_KEY
    b64 = base64.b64encode(OTHER_KEY).decode()
    assert load_or_create_key(path, env={KEY_ENV: f"  {b64}\n"}) == OTHER_KEY
    assert load_or_create_key(path, env={}) == from_file


def test_env_key_is_used_without_creating_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"
    assert load_or_create_key(path, env={KEY_ENV: KEY.hex()}) == KEY
    assert not path.exists()


def test_key_file_outside_the_data_dir(tmp_path: Path) -> None:
    data, keys = tmp_path / "data", tmp_path / "keys"
    in_data = data / "sealing.key"
    key = load_or_create_key(in_data, env={})
    assert placement_of_sealing_key(data, env={}) == in_data

    # Moved to a mistyped path: refused, no new key made anywhere.
    moved = keys / "sealing.key"
    with pytest.raises(ConfigError, match=f"mv {in_data} {moved}") as err:
        load_or_create_key(in_data, env={KEY_FILE_ENV: str(moved)})
    assert err.value.key == KEY_FILE_ENV and not moved.exists()

    keys.mkdir()
    in_data.rename(moved)
    env = {KEY_FILE_ENV: str(moved)}
    assert load_or_create_key(in_data, env=env) == key
    assert not in_data.exists()
    assert placement_of_sealing_key(data, env=env) is None
    assert placement_of_sealing_key(data, env={KEY_ENV: KEY.hex()}) is None
    # A "moved" key that still lives under the data dir is still beside the database.
    assert placement_of_sealing_key(data, env={KEY_FILE_ENV: str(data / "k" / "s.key")}) == (
        data / "k" / "s.key"
    )


def test_key_file_env_on_a_fresh_install_creates_the_file_there(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "sealing.key"
    key = load_or_create_key(tmp_path / "data" / "sealing.key", env={KEY_FILE_ENV: str(target)})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not (tmp_path / "data" / "sealing.key").exists()
    assert load_or_create_key(tmp_path / "other", env={KEY_FILE_ENV: str(target)}) == key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "sealing.key"
    load_or_create_key(path, env={})
    path.chmod(mode)
    with pytest.raises(ConfigError, match="readable by others") as err:
        load_or_create_key(path, env={})
    assert f"chmod 600 {path}" in str(err.value)
    assert err.value.file == str(path)


@pytest.mark.parametrize(
    "value",
    [
        "abcd",  # too short
        KEY.hex() + "00",  # 33 bytes
        "not a key at all!",
        base64.b64encode(bytes(16)).decode(),
        bytes(KEY_SIZE).hex(),  # all zeros
    ],
)
def test_bad_env_key_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_or_create_key(tmp_path / "sealing.key", env={KEY_ENV: value})
    assert err.value.key == KEY_ENV
    assert str(err.value).startswith(f"{KEY_ENV}: ")
    assert value not in str(err.value)  # a key, even a bad one, is not echoed


def test_damaged_key_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"0123\n")
    os.close(fd)
    with pytest.raises(ConfigError) as err:
        load_or_create_key(path, env={})
    assert str(err.value).startswith(f"{path}: ")


def test_passphrase_key_is_deterministic_per_salt_and_passphrase() -> None:
    salt, other_salt = new_salt(), new_salt()
    assert len(salt) == SALT_SIZE and salt != other_salt
    key = derive_passphrase_key("correct horse battery", salt)
    assert len(key) == KEY_SIZE
    assert derive_passphrase_key("correct horse battery", salt) == key
    assert derive_passphrase_key("correct horse battery", other_salt) != key
    assert derive_passphrase_key("correct horse batterz", salt) != key


def test_passphrase_salt_of_wrong_size_is_refused() -> None:
    with pytest.raises(SealingError, match="salt"):
        derive_passphrase_key("pass", b"short")


def test_subkeys_differ_per_purpose() -> None:
    sealer = Sealer(KEY)
    purposes = [
        "nio-pickle",
        "cross-signing",
        # Same first 16 bytes: must still differ.
        "nio-crypto-store-pickle-bridge",
        "nio-crypto-store-pickle-tui",
    ]
    keys = [sealer.subkey(p) for p in purposes]
    assert all(len(k) == KEY_SIZE for k in keys)
    assert len(set(keys)) == len(keys)
    assert KEY not in keys
    # Deterministic: the same root key gives the same sub-key after a restart.
    assert Sealer(KEY).subkey("nio-pickle") == keys[0] == derive_subkey(KEY, "nio-pickle")
    assert Sealer(OTHER_KEY).subkey("nio-pickle") != keys[0]


def test_sealer_refuses_a_key_of_wrong_size() -> None:
    with pytest.raises(SealingError):
        Sealer(b"short")


def test_context_keys_kept_derived_stay_apart_and_survive_the_bound() -> None:
    """The sealer keeps each context's key once derived; more contexts than it keeps
    still each open only their own values, before and after the kept keys are dropped."""
    sealer = Sealer(KEY)
    contexts = [f"column.{i}" for i in range(600)]
    sealed = {c: sealer.seal(c, context=c) for c in contexts}
    for c in contexts:
        assert sealer.open_text(sealed[c], context=c) == c
        assert Sealer(KEY).open_text(sealed[c], context=c) == c
    with pytest.raises(SealingError):
        sealer.open(sealed["column.1"], context="column.2")
    with pytest.raises(SealingError):
        Sealer(OTHER_KEY).open(sealed["column.1"], context="column.1")
