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

from e2ecounsel.errors import E2ECounselError, HomeserverUnreachable, MatrixError, SealingError
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.crosssigning import CrossSigningError
from e2ecounsel.matrix.secretstorage import RecoveryKeyError, SecretStorageError
from e2ecounsel.matrix.session import NO_ANSWER
from e2ecounsel.sealing import Sealer
from tui.notes import NoteBook, WrongPassphrase, unlock
from tui.settings import TuiSettings
from tui.snapshot import SNAPSHOT_FILE, QueueSnapshot

logger = logging.getLogger(__name__)

_LAST_ACCOUNT = "account.json"


class SignInFailed(E2ECounselError):
    """Sign-in did not work; the message is meant for the counselor's eyes."""


class Offline(SignInFailed):
    """The homeserver could not be reached: nothing was refused. The session is
    left open, so the same sign-in can be tried again later."""


OFFLINE = "The homeserver cannot be reached. Check the connection; nothing was changed."
#: No answer from the homeserver: after the session's retries, or from a single sync.
_NO_ANSWER = (HomeserverUnreachable, *NO_ANSWER)


@dataclass
class Connected:
    session: MatrixSession
    notes: NoteBook
    recovery_key: str | None = None
    warning: str = ""
    snapshot: QueueSnapshot | None = None


@dataclass
class Unlocked:
    """The store opened with the passphrase, before any network: the notes, the
    queue's snapshot (already read) and the session, not signed in yet."""

    session: MatrixSession
    notes: NoteBook
    snapshot: QueueSnapshot


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


async def unlock_store(
    settings: TuiSettings, *, homeserver: str, user_id: str, passphrase: str
) -> Unlocked:
    """Open the account's store with the passphrase (argon2id, in a thread) and read
    the notes and the queue snapshot; nothing is asked of the homeserver yet.

    A wrong passphrase raises :class:`SignInFailed` and opens nothing.
    """
    store = settings.account_dir(user_id)

    def open_all() -> tuple[Sealer, NoteBook, QueueSnapshot]:
        sealer = unlock(store, passphrase, limits=settings.kdf)
        notes = NoteBook(store / "notes.sealed", sealer)
        snapshot = QueueSnapshot(store / SNAPSHOT_FILE, sealer, user_id)
        snapshot.read()
        return sealer, notes, snapshot

    try:
        sealer, notes, snapshot = await asyncio.to_thread(open_all)
    except WrongPassphrase as exc:
        raise SignInFailed(str(exc)) from None
    except SealingError:
        raise SignInFailed("The local store could not be opened with this passphrase.") from None
    session = MatrixSession(
        homeserver,
        user_id,
        store / "matrix",
        sealer,
        device_name=settings.device_name,
        max_backoff=settings.max_backoff_s,
    )
    return Unlocked(session, notes, snapshot)


async def go_online(
    settings: TuiSettings,
    opened: Unlocked,
    *,
    password: str | None = None,
    recovery_key: str | None = None,
) -> Connected:
    """Restore or sign in the device, cross-sign it and sync once.

    Without ``password`` only a saved device can be restored. A wrong password
    or recovery key raises :class:`SignInFailed` with text for the counselor
    (the session is closed, the store left as it was). A homeserver that does not
    answer raises :class:`Offline` and leaves the session open for another try.
    """
    session = opened.session
    try:
        try:
            await session.login(password or None)
        except _NO_ANSWER:
            raise
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
    except _NO_ANSWER as exc:
        logger.warning("homeserver unreachable at sign-in: %s", type(exc).__name__)
        raise Offline(OFFLINE) from None
    except BaseException:
        await session.close()
        raise
    _remember(settings, session.homeserver, session.user_id)
    return Connected(session, opened.notes, new_key, warning, opened.snapshot)


async def connect(
    settings: TuiSettings,
    *,
    homeserver: str,
    user_id: str,
    passphrase: str,
    password: str | None = None,
    recovery_key: str | None = None,
) -> Connected:
    """Unlock the store, restore or sign in the device, and cross-sign it (the
    first sign-in: nothing to show before it is done)."""
    opened = await unlock_store(
        settings, homeserver=homeserver, user_id=user_id, passphrase=passphrase
    )
    return await go_online(settings, opened, password=password, recovery_key=recovery_key)
