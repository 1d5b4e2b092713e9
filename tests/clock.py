"""A clock tests move by hand, handed to whatever takes ``clock=``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Stands still at ``now`` (the wall clock's time when not given) until advanced."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now if now is not None else datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
