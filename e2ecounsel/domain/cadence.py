"""Reply windows in the counselor's own time zone.

Counselors answer in a few rounds a day ("09:00, 13:00, 19:00" where they live), not instantly. All
functions take the current time as a parameter and return aware UTC datetimes; the local calendar
(days off, DST) is resolved with ``zoneinfo``:

* a window time that does not exist on a spring-forward day (e.g. 02:30 in Europe/Berlin)
  happens at the instant the clock would show it had it not jumped (03:30 local): the round is
  late, not lost;
* a window time that occurs twice on a fall-back day happens once, at its first occurrence;
* days off are weekdays (0 = Monday ... 6 = Sunday) of the counselor's local calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class ReplyWindows:
    """A counselor's reply rounds: local ``times`` in zone ``tz``, none on ``days_off``."""

    times: tuple[time, ...]
    tz: str
    days_off: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if any(t.tzinfo is not None for t in self.times):
            raise ValueError("reply window times are local wall-clock times, without a zone")
        if not self.days_off <= frozenset(range(7)):
            raise ValueError("days off are weekdays 0 (Monday) to 6 (Sunday)")
        zone(self.tz)
        object.__setattr__(self, "times", tuple(sorted(set(self.times))))

    @property
    def zone(self) -> ZoneInfo:
        """The counselor's time zone."""
        return zone(self.tz)


def zone(name: str) -> ZoneInfo:
    """``ZoneInfo(name)``, raising ``ValueError`` for an unknown or malformed name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _require_aware(*instants: datetime) -> None:
    for instant in instants:
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise ValueError("times must be timezone-aware")


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """UTC instant of local ``day`` ``at`` in ``tz`` (gaps move forward, repeats take the first)."""
    return datetime.combine(day, at.replace(fold=0), tzinfo=tz).astimezone(UTC)


def windows_on(day: date, windows: ReplyWindows) -> list[datetime]:
    """The UTC instants of the windows on the counselor's local ``day`` (none on a day off)."""
    if day.weekday() in windows.days_off:
        return []
    tz = windows.zone
    return sorted({local_instant(day, t, tz) for t in windows.times})


def next_window(now_utc: datetime, windows: ReplyWindows) -> datetime | None:
    """The first window strictly after ``now_utc``; ``None`` if there is never one (no times, or
    every weekday off)."""
    _require_aware(now_utc)
    today = now_utc.astimezone(windows.zone).date()
    for offset in range(-1, 9):
        later = [w for w in windows_on(today + timedelta(days=offset), windows) if w > now_utc]
        if later:
            return later[0]
    return None


def format_wait(ms: int) -> str:
    """A waiting time as the bot and the counselor app show it: "3 h 12 m", "2 d 4 h", "5 m"."""
    minutes = max(ms, 0) // 60_000
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} m"
    return f"{mins} m"
