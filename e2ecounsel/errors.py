"""One exception tree for the whole project.

Every error a user or operator can cause ends up as an :class:`E2ECounselError`
whose ``str()`` is a single, friendly line that says what is wrong and how to
fix it. The CLI prints that line and exits non-zero; it never shows a traceback
for these.
"""

from __future__ import annotations

from pathlib import Path


class E2ECounselError(Exception):
    """Base of every error raised on purpose by e2ecounsel."""


class ConfigError(E2ECounselError):
    """A configuration value is missing or wrong.

    Names the file and the key (like Synapse's ``ConfigError(msg, path)``) so the
    operator can go straight to it.
    """

    def __init__(self, msg: str, *, file: str | Path | None = None, key: str | None = None):
        self.msg = msg
        self.file = str(file) if file is not None else None
        self.key = key
        where = ""
        if self.file and key:
            where = f"{self.file}: {key}: "
        elif self.file:
            where = f"{self.file}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{msg}")


class PolicyError(ConfigError):
    """A file under ``policies/`` is invalid."""


class StorageError(E2ECounselError):
    """The database cannot be opened or used as it is."""


class SealingError(E2ECounselError):
    """Sealed data cannot be opened: wrong key, or the data was changed."""


class CommandError(E2ECounselError):
    """A command was given bad arguments; the message is safe to show."""


class HomeserverError(E2ECounselError):
    """The embedded homeserver cannot be set up, started or reached."""


class MatrixError(E2ECounselError):
    """The homeserver answered a request with an error we cannot recover from."""

    def __init__(self, msg: str, *, errcode: str | None = None, status: int | None = None):
        self.errcode = errcode
        self.status = status
        super().__init__(msg)


class HomeserverUnreachable(MatrixError):
    """The homeserver did not answer (no connection, a time-out, or only 5xx / 429
    answers) after every retry: nothing was refused, a later try may work."""
