"""The counselor's passphrase, and the private notes it protects.

One passphrase guards everything this app keeps on disk: argon2id turns it into
a key (the salt and limits sit next to the data in ``passphrase.json``, with a
sealed check value so a wrong passphrase is reported at once, not as a damaged
store later). That key seals the Matrix login and crypto-store key and, under
its own context, the notes file. Notes never leave the machine.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.pwhash

from e2ecounsel.errors import E2ECounselError, SealingError
from e2ecounsel.sealing import KEY_SIZE, Sealer, new_salt

_VAULT_FILE = "passphrase.json"
_CHECK = "e2ecounsel tui passphrase check"
_NOTES_CONTEXT = "tui.notes"


class WrongPassphrase(E2ECounselError):
    """The passphrase does not open this data dir."""


@dataclass(frozen=True)
class KdfLimits:
    """argon2id cost. MODERATE in real use; tests may pass cheaper limits."""

    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE


MODERATE = KdfLimits()
FAST_FOR_TESTS = KdfLimits(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)


def _derive(passphrase: str, salt: bytes, limits: KdfLimits) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        KEY_SIZE, passphrase.encode(), salt, opslimit=limits.opslimit, memlimit=limits.memlimit
    )


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename), 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def vault_exists(data_dir: Path) -> bool:
    return (data_dir / _VAULT_FILE).exists()


def unlock(data_dir: Path, passphrase: str, *, limits: KdfLimits = MODERATE) -> Sealer:
    """The sealer for ``data_dir``, from the passphrase (set up on first use).

    Slow on purpose (argon2id): call it from a worker thread. The limits of an
    existing vault are the ones stored with it; ``limits`` only applies when the
    vault is created.
    """
    if not passphrase:
        raise WrongPassphrase("enter your passphrase")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / _VAULT_FILE
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            salt = base64.b64decode(info["salt"])
            stored = KdfLimits(int(info["opslimit"]), int(info["memlimit"]))
            check = base64.b64decode(info["check"])
        except (OSError, ValueError, KeyError) as exc:
            raise SealingError(f"{path} is damaged") from exc
        sealer = Sealer(_derive(passphrase, salt, stored))
        try:
            sealer.open(check, context="tui.check")
        except SealingError:
            raise WrongPassphrase(
                "That passphrase does not open this data dir. Check it and try again."
            ) from None
        return sealer
    salt = new_salt()
    sealer = Sealer(_derive(passphrase, salt, limits))
    info = {
        "v": 1,
        "kdf": "argon2id",
        "salt": base64.b64encode(salt).decode(),
        "opslimit": limits.opslimit,
        "memlimit": limits.memlimit,
        "check": base64.b64encode(sealer.seal(_CHECK, context="tui.check")).decode(),
    }
    write_private(path, json.dumps(info, indent=1).encode())
    return sealer


class NoteBook:
    """Private notes per client (session room id), sealed in one file.

    The whole file is rewritten on each save: notes are short, and one sealed
    blob leaks neither how many clients have notes nor which rooms they are.
    """

    def __init__(self, path: Path, sealer: Sealer) -> None:
        self.path = path
        self._sealer = sealer
        self._notes: dict[str, str] = {}
        if path.exists():
            try:
                raw = sealer.open_text(path.read_bytes(), context=_NOTES_CONTEXT)
            except SealingError:
                raise WrongPassphrase(
                    "The notes file cannot be opened with this passphrase."
                ) from None
            data = json.loads(raw)
            self._notes = {str(k): str(v) for k, v in data.items()}

    @classmethod
    def open(cls, data_dir: Path, passphrase: str, *, limits: KdfLimits = MODERATE) -> NoteBook:
        """Unlock with the passphrase and read the notes (one argon2id run)."""
        return cls(data_dir / "notes.sealed", unlock(data_dir, passphrase, limits=limits))

    def get(self, room_id: str) -> str:
        return self._notes.get(room_id, "")

    def set(self, room_id: str, text: str) -> None:
        if self._notes.get(room_id, "") == text:
            return
        if text:
            self._notes[room_id] = text
        else:
            self._notes.pop(room_id, None)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = self._sealer.seal(json.dumps(self._notes), context=_NOTES_CONTEXT)
        write_private(self.path, blob)
