"""Signing in and unlocking: from a passphrase (and, once, a password) to a live session.

The slow parts (argon2id, the first sync) run here, outside any widget, so the
sign-in screen only waits on one worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from e2ecounsel.errors import E2ECounselError, MatrixError, SealingError
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.crosssigning import CrossSigningError
from e2ecounsel.matrix.secretstorage import RecoveryKeyError, SecretStorageError
from tui.notes import NoteBook, WrongPassphrase, unlock
from tui.settings import TuiSettings

logger = logging.getLogger(__name__)

_LAST_ACCOUNT = "account.json"


class SignInFailed(E2ECounselError):
    """Sign-in did not work; the message is meant for the counselor's eyes."""


@dataclass
class Connected:
    session: MatrixSession
    notes: NoteBook
    recovery_key: str | None = None
    warning: str = ""


def last_account(settings: TuiSettings) -> tuple[str, str] | None:
    """(homeserver, user id) of the account signed in last on this machine."""
    path = settings.data_dir / _LAST_ACCOUNT
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["homeserver"]), str(data["user_id"])
    except (OSError, ValueError, KeyError):
        return None


def has_saved_login(settings: TuiSettings, user_id: str) -> bool:
    return (settings.account_dir(user_id) / "matrix" / "login.sealed").exists()


def _remember(settings: TuiSettings, homeserver: str, user_id: str) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path: Path = settings.data_dir / _LAST_ACCOUNT
    path.write_text(json.dumps({"homeserver": homeserver, "user_id": user_id}), encoding="utf-8")


async def connect(
    settings: TuiSettings,
    *,
    homeserver: str,
    user_id: str,
    passphrase: str,
    password: str | None = None,
    recovery_key: str | None = None,
) -> Connected:
    """Unlock the store, restore or sign in the device, and cross-sign it.

    Without ``password`` only a saved device can be restored. A wrong
    passphrase, password or recovery key raises :class:`SignInFailed` with text
    for the counselor (and the store is left as it was).
    """
    store = settings.account_dir(user_id)
    try:
        sealer = await asyncio.to_thread(unlock, store, passphrase, limits=settings.kdf)
        notes = NoteBook(store / "notes.sealed", sealer)
    except WrongPassphrase as exc:
        raise SignInFailed(str(exc)) from None
    except SealingError:
        raise SignInFailed("The local store could not be opened with this passphrase.") from None
    session = MatrixSession(
        homeserver, user_id, store / "matrix", sealer, device_name=settings.device_name
    )
    try:
        try:
            await session.login(password or None)
        except SealingError:
            raise SignInFailed("The saved sign-in cannot be opened with this passphrase.") from None
        except MatrixError as exc:
            logger.warning("sign-in failed: %s", exc.errcode)
            if exc.errcode == "M_FORBIDDEN":
                raise SignInFailed("The user name or password is not right.") from None
            if password is None:
                raise SignInFailed("Please sign in with your password once more.") from None
            raise SignInFailed(
                "Could not reach the homeserver to sign in. Check its address and try again."
            ) from None
        warning = ""
        new_key: str | None = None
        try:
            status = await session.ensure_cross_signing(password, recovery_key=recovery_key or None)
            new_key = status.recovery_key
        except (CrossSigningError, RecoveryKeyError, SecretStorageError) as exc:
            if recovery_key:
                raise SignInFailed(
                    "That recovery key does not open this account's security keys. "
                    "Nothing was changed; check it and try again."
                ) from None
            warning = str(exc)
        except MatrixError as exc:
            logger.warning("cross-signing could not be checked: %s", exc.errcode)
            warning = "This device could not be verified yet; it will try again at next start."
        await session.sync_once(0)
    except BaseException:
        await session.close()
        raise
    _remember(settings, homeserver, user_id)
    return Connected(session, notes, new_key, warning)
