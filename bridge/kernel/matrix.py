"""The only door from a feature to Matrix.

Features never import nio. What they need from the homeserver goes through
:class:`Matrix`: the bot's id, the session's authenticated request helper
(every answer is a status and a JSON body; :mod:`bridge.kernel.rooms` turns a
refusal into :class:`~e2ecounsel.errors.MatrixError`), and what the last sync
says about a room's members. The bridge hands in its
:class:`~e2ecounsel.matrix.MatrixSession`; fast handler tests hand in a
recording stand-in that answers every request and keeps what was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Matrix(Protocol):
    """The homeserver as a feature sees it."""

    @property
    def user_id(self) -> str: ...

    async def raw(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """An authenticated client-server API request; returns (status, json)."""
        ...

    def synced_members(self, room_id: str) -> frozenset[str] | None:
        """Who the last sync lists as joined or invited in ``room_id``; None if not loaded."""
        ...
