"""Live-session slots from a counselor's weekly availability.

Availability is written in the counselor's local wall-clock time; slots are computed per local day,
converted to UTC at the range edges, and then laid out in real minutes, so a DST day has exactly as
many slots as real time allows and no two slots overlap. Rendering a slot in the client's zone is
the bridge's job; the database's unique constraint is the final guard against double booking.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from e2ecounsel.domain.cadence import local_instant, zone

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Range = tuple[time, time]


class AvailabilityError(ValueError):
    """Weekly availability that makes no sense (message is operator-facing)."""


def availability_problems(days: Mapping[int, Sequence[Range]]) -> list[str]:
    """Unknown weekdays, empty or inverted ranges, and overlapping ranges on the same day."""
    problems: list[str] = []
    for weekday, ranges in sorted(days.items()):
        if weekday not in range(7):
            problems.append(f"weekday {weekday} is not 0 (Monday) to 6 (Sunday)")
            continue
        name = DAY_NAMES[weekday]
        for start, end in ranges:
            if start.tzinfo is not None or end.tzinfo is not None:
                problems.append(f"{name}: times are local, without a zone")
            elif start >= end:
                problems.append(f"{name}: {start:%H:%M}-{end:%H:%M} ends before it starts")
        ordered = sorted(r for r in ranges if r[0] < r[1])
        for (s1, e1), (s2, e2) in zip(ordered, ordered[1:], strict=False):
            if s2 < e1:
                problems.append(f"{name}: {s1:%H:%M}-{e1:%H:%M} overlaps {s2:%H:%M}-{e2:%H:%M}")
    return problems


@dataclass(frozen=True)
class WeeklyAvailability:
    """Per weekday (0 = Monday) the local (start, end) ranges a counselor takes live sessions."""

    days: Mapping[int, tuple[Range, ...]]
    tz: str

    def __post_init__(self) -> None:
        problems = availability_problems(self.days)
        if problems:
            raise AvailabilityError("; ".join(problems))
        try:
            zone(self.tz)
        except ValueError as exc:
            raise AvailabilityError(str(exc)) from exc
        normal = {d: tuple(sorted(r)) for d, r in sorted(self.days.items()) if r}
        object.__setattr__(self, "days", normal)


_SPEC = re.compile(
    r"^\s*(?P<d1>[a-z]{3})(?:\s*-\s*(?P<d2>[a-z]{3}))?\s+"
    r"(?P<ranges>\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}(?:\s*,\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2})*)\s*$"
)


def parse_weekly(spec: str, tz: str) -> WeeklyAvailability:
    """Parse ``"mon-fri 10:00-16:00; sat 10:00-12:00,14:00-15:00"`` (the CLI's format)."""
    days: dict[int, list[Range]] = {}
    for part in filter(None, (p.strip() for p in spec.casefold().split(";"))):
        m = _SPEC.match(part)
        if m is None or m["d1"] not in DAY_NAMES or (m["d2"] and m["d2"] not in DAY_NAMES):
            raise AvailabilityError(f"cannot read {part!r}; expected e.g. 'mon-fri 10:00-16:00'")
        first = DAY_NAMES.index(m["d1"])
        last = DAY_NAMES.index(m["d2"]) if m["d2"] else first
        weekdays = range(first, last + 1) if first <= last else [*range(first, 7), *range(last + 1)]
        for chunk in m["ranges"].split(","):
            a, b = (_clock(x) for x in chunk.split("-"))
            for weekday in weekdays:
                days.setdefault(weekday, []).append((a, b))
    return WeeklyAvailability({d: tuple(r) for d, r in days.items()}, tz)


def _clock(text: str) -> time:
    hours, minutes = (int(x) for x in text.strip().split(":"))
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise AvailabilityError(f"{text.strip()!r} is not a time of day")
    return time(hours, minutes)


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    """Whether two half-open intervals share any instant."""
    return a_start < b_end and b_start < a_end


def _day_slots(day: date, avail: WeeklyAvailability, length: timedelta) -> list[datetime]:
    tz = zone(avail.tz)
    starts: list[datetime] = []
    for start, end in avail.days.get(day.weekday(), ()):
        begin, finish = local_instant(day, start, tz), local_instant(day, end, tz)
        slot = begin
        while slot + length <= finish:
            if not starts or slot >= starts[-1] + length:
                starts.append(slot)
            slot += length
    return starts


def slots(
    avail: WeeklyAvailability,
    slot_minutes: int,
    from_utc: datetime,
    horizon_days: int,
    taken: Collection[datetime],
    taken_minutes: int | None = None,
) -> list[datetime]:
    """Free slot starts (aware UTC, ascending) from ``from_utc`` up to ``horizon_days`` later.

    A slot is free if it starts at or after ``from_utc`` and does not overlap any taken booking
    (each ``taken_minutes`` long, default ``slot_minutes``) — so a change of slot length never lets
    a new booking straddle an old one.
    """
    if slot_minutes <= 0 or horizon_days < 0:
        return []
    if from_utc.tzinfo is None:
        raise ValueError("from_utc must be timezone-aware")
    length = timedelta(minutes=slot_minutes)
    busy = timedelta(minutes=taken_minutes if taken_minutes is not None else slot_minutes)
    booked = sorted(t.astimezone(UTC) for t in taken)
    until = from_utc + timedelta(days=horizon_days)
    tz = zone(avail.tz)
    day = from_utc.astimezone(tz).date() - timedelta(days=1)
    last = until.astimezone(tz).date()
    free: list[datetime] = []
    while day <= last:
        for start in _day_slots(day, avail, length):
            if start < from_utc or start >= until or (free and start < free[-1] + length):
                continue
            if not _clashes(start, start + length, booked, busy):
                free.append(start)
        day += timedelta(days=1)
    return free


def _clashes(start: datetime, end: datetime, booked: list[datetime], busy: timedelta) -> bool:
    # Bookings share one length, so among those starting before ``end`` the latest ends last.
    i = bisect.bisect_left(booked, end)
    return i > 0 and booked[i - 1] + busy > start


def is_bookable(
    start: datetime,
    avail: WeeklyAvailability,
    slot_minutes: int,
    now_utc: datetime,
    horizon_days: int,
    taken: Collection[datetime],
) -> bool:
    """Whether a client may book ``start`` now (re-checked at booking time; lists go stale)."""
    return start in slots(avail, slot_minutes, now_utc, horizon_days, taken)
