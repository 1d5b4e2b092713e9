"""Messages the app's parts send each other (harlequin-style small dataclasses).

The Matrix adapter and the workers post these; widgets and the app react. No
message carries a client's text to a log: they are in-process only.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from e2ecounsel.matrix import ConnectionState


@dataclass
class QueueChanged(Message):
    """Something in the queue model changed (new message, brief, risk ...)."""

    room_ids: frozenset[str] = frozenset()


@dataclass
class ConnectionChanged(Message):
    state: ConnectionState


@dataclass
class SendFinished(Message):
    """A message (``room_id`` set) or a command (``room_id`` empty) was sent or not;
    ``body`` is the text to give back to the composer when it was not."""

    room_id: str
    ok: bool
    error: str = ""
    body: str = ""


@dataclass
class TrustChecked(Message):
    room_id: str


@dataclass
class SignedIn(Message):
    """Sign-in or unlock succeeded; ``recovery_key`` is set only when a new one
    was just created (show it once)."""

    recovery_key: str | None = None
    warning: str = ""


@dataclass
class Problem(Message):
    """Friendly text for the status line (never an exception string)."""

    text: str
