"""Sealing of data at rest with PyNaCl's SecretBox (XSalsa20-Poly1305).

The sealing key is the root secret of a data dir. It comes from the environment
variable ``E2ECOUNSEL_SEALING_KEY`` (hex or base64, 32 bytes), from the 0600 key
file named by ``E2ECOUNSEL_SEALING_KEY_FILE``, or from a 0600 key file in the data
dir created on first start. The last is the easy default and the weakest: a copy
of the data dir (a backup, a stolen disk image) then carries the key with the
database it opens, which :func:`placement_of_sealing_key` lets callers warn about.
Sub-keys for other purposes (nio's crypto-store pickle key, the cross-signing
key store) are derived from it with BLAKE2b keyed hashing, so one secret
protects everything and no purpose shares a key.

Passphrase-derived keys (the counselor's notes) use argon2id.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.utils

from e2ecounsel.errors import ConfigError, SealingError

KEY_ENV = "E2ECOUNSEL_SEALING_KEY"
KEY_FILE_ENV = "E2ECOUNSEL_SEALING_KEY_FILE"
KEY_FILE_NAME = "sealing.key"
KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE
SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES
_PREFIX = b"e2cs1:"


def _decode_key(text: str, *, source: str) -> bytes:
    text = text.strip()
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error:
            raw = None
    where: dict[str, str | None] = {
        "file": source if source != KEY_ENV else None,
        "key": KEY_ENV if source == KEY_ENV else None,
    }
    if raw is None or len(raw) != KEY_SIZE:
        raise ConfigError(
            f"the sealing key must be {KEY_SIZE} bytes, hex or base64 encoded", **where
        )
    if raw == bytes(KEY_SIZE):
        raise ConfigError("the sealing key is all zeros; generate a real one", **where)
    return raw


def load_or_create_key(path: Path, *, env: Mapping[str, str] | None = None) -> bytes:
    """Return the sealing key: from the environment if set, else from ``path``.

    ``E2ECOUNSEL_SEALING_KEY`` holds the key itself; ``E2ECOUNSEL_SEALING_KEY_FILE``
    names a key file to use instead of ``path``. That file is created on a fresh
    install, but never while ``path`` still holds a key: a moved key whose new
    path was mistyped must not silently become a new key that opens nothing.
    The key file is created (mode 0600) when missing. A key file readable by
    others is refused: it would expose every sealed column.
    """
    environ = os.environ if env is None else env
    if environ.get(KEY_ENV):
        return _decode_key(environ[KEY_ENV], source=KEY_ENV)
    moved = environ.get(KEY_FILE_ENV)
    if moved:
        target = Path(moved).expanduser()
        if not target.exists() and path.exists() and path != target:
            raise ConfigError(
                f"no key file at {target}, but the data dir still holds one at {path}; "
                f"move it there (mv {path} {target}) or fix the path",
                key=KEY_FILE_ENV,
            )
        path = target
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"the key file is readable by others (mode {mode:o}); run: chmod 600 {path}",
                file=path,
            )
        return _decode_key(path.read_text(encoding="ascii"), source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = nacl.utils.random(KEY_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    return key


def placement_of_sealing_key(
    data_dir: Path, *, env: Mapping[str, str] | None = None
) -> Path | None:
    """The key file when it sits inside ``data_dir`` (beside the database), else None.

    None also when the key comes from ``E2ECOUNSEL_SEALING_KEY``: then no file holds it.
    """
    environ = os.environ if env is None else env
    if environ.get(KEY_ENV):
        return None
    moved = environ.get(KEY_FILE_ENV)
    path = Path(moved).expanduser() if moved else data_dir / KEY_FILE_NAME
    try:
        path.resolve().relative_to(data_dir.resolve())
    except ValueError:
        return None
    return path


# BLAKE2b personalisation strings (exactly 16 bytes): one per kind of derived key,
# so a sub-key can never equal a context key whatever the purpose string is.
_PERSON_SUBKEY = b"e2ecounsel-subk1"
_PERSON_CONTEXT = b"e2ecounsel-ctx-1"
#: Context keys kept derived (contexts name columns, so a handful; a bound all the same).
_MAX_CONTEXT_KEYS = 256


def _derive(key: bytes, label: str, person: bytes) -> bytes:
    # The whole label is the hashed message (BLAKE2b's ``person`` holds only 16
    # bytes, so putting the label there would make long labels collide).
    return nacl.hash.blake2b(
        label.encode(),
        key=key,
        person=person,
        digest_size=KEY_SIZE,
        encoder=nacl.encoding.RawEncoder,
    )


def derive_subkey(key: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``, independent of keys for other purposes."""
    return _derive(key, purpose, _PERSON_SUBKEY)


def derive_passphrase_key(passphrase: str, salt: bytes) -> bytes:
    """argon2id (moderate limits) of a passphrase: slow on purpose, to resist guessing."""
    if len(salt) != SALT_SIZE:
        raise SealingError(f"the salt must be {SALT_SIZE} bytes")
    return nacl.pwhash.argon2id.kdf(
        KEY_SIZE,
        passphrase.encode(),
        salt,
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
    )


def new_salt() -> bytes:
    return nacl.utils.random(SALT_SIZE)


class Sealer:
    """Seals and opens small values with one key.

    ``context`` binds a sealed value to where it belongs (table and column, for
    example): a value copied into another column does not open there.
    """

    def __init__(self, key: bytes):
        if len(key) != KEY_SIZE:
            raise SealingError(f"a sealing key is {KEY_SIZE} bytes")
        self._key = key
        self._box = nacl.secret.SecretBox(key)
        # Context keys, derived once each: a column's values are sealed and opened
        # over and over (every inbox event, every outbox row).
        self._boxes: dict[str, nacl.secret.SecretBox] = {}

    def subkey(self, purpose: str) -> bytes:
        return derive_subkey(self._key, purpose)

    def _box_for(self, context: str) -> nacl.secret.SecretBox:
        if not context:
            return self._box
        box = self._boxes.get(context)
        if box is None:
            if len(self._boxes) >= _MAX_CONTEXT_KEYS:
                self._boxes.clear()
            box = nacl.secret.SecretBox(_derive(self._key, context, _PERSON_CONTEXT))
            self._boxes[context] = box
        return box

    def seal(self, data: bytes | str, *, context: str = "") -> bytes:
        raw = data.encode() if isinstance(data, str) else data
        return _PREFIX + bytes(self._box_for(context).encrypt(raw))

    def open(self, sealed: bytes, *, context: str = "") -> bytes:
        if not sealed.startswith(_PREFIX):
            raise SealingError("not sealed data (unknown format)")
        try:
            return self._box_for(context).decrypt(sealed[len(_PREFIX) :])
        except nacl.exceptions.CryptoError as exc:
            raise SealingError(
                "sealed data cannot be opened: wrong sealing key, or the data was changed"
            ) from exc

    def open_text(self, sealed: bytes, *, context: str = "") -> str:
        return self.open(sealed, context=context).decode()
