"""Reply windows across time zones, days off and DST."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from e2ecounsel.domain.cadence import (
    ReplyWindows,
    format_wait,
    local_instant,
    next_window,
    windows_on,
)

JAKARTA = ReplyWindows((time(9), time(13), time(19)), "Asia/Jakarta", frozenset({5, 6}))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def windows_between(start: datetime, end: datetime, windows: ReplyWindows) -> list[datetime]:
    """Oracle for the properties: every window in ``(start, end]``, found day by day."""
    found: list[datetime] = []
    day = start.astimezone(windows.zone).date() - timedelta(days=1)
    while day <= end.astimezone(windows.zone).date() + timedelta(days=1):
        found.extend(w for w in windows_on(day, windows) if start < w <= end)
        day += timedelta(days=1)
    return found


def test_next_window_same_day_and_after_weekend() -> None:
    # Friday 2025-03-07 10:00 in Jakarta (UTC+7) is 03:00Z: next is 13:00 local.
    assert next_window(utc(2025, 3, 7, 3), JAKARTA) == utc(2025, 3, 7, 6)
    # Friday 20:00 local: Saturday and Sunday off, so Monday 09:00 local = 02:00Z.
    assert next_window(utc(2025, 3, 7, 13), JAKARTA) == utc(2025, 3, 10, 2)
    # Exactly at a window: the next one, never the current instant.
    assert next_window(utc(2025, 3, 7, 6), JAKARTA) == utc(2025, 3, 7, 12)


def test_new_york_window_moves_in_utc_across_dst() -> None:
    ny = ReplyWindows((time(9),), "America/New_York")
    assert next_window(utc(2025, 3, 7, 0), ny) == utc(2025, 3, 7, 14)  # EST
    assert next_window(utc(2025, 3, 10, 0), ny) == utc(2025, 3, 10, 13)  # EDT


def test_nonexistent_window_happens_late_not_never() -> None:
    berlin = ReplyWindows((time(2, 30),), "Europe/Berlin")
    # 2025-03-30: clocks jump 02:00 CET -> 03:00 CEST. 02:30 happens at 03:30 CEST = 01:30Z.
    got = next_window(utc(2025, 3, 30, 0), berlin)
    assert got == utc(2025, 3, 30, 1, 30)
    assert got is not None and got.astimezone(ZoneInfo("Europe/Berlin")).time() == time(3, 30)


def test_ambiguous_window_happens_once() -> None:
    berlin = ReplyWindows((time(2, 30),), "Europe/Berlin")
    # 2025-10-26: 02:30 occurs at 00:30Z (CEST) and again at 01:30Z (CET); only the first counts.
    assert next_window(utc(2025, 10, 26, 0), berlin) == utc(2025, 10, 26, 0, 30)
    assert next_window(utc(2025, 10, 26, 0, 30), berlin) == utc(2025, 10, 27, 1, 30)
    day = windows_between(utc(2025, 10, 25, 12), utc(2025, 10, 26, 12), berlin)
    assert day == [utc(2025, 10, 26, 0, 30)]


def test_never_a_window() -> None:
    assert next_window(utc(2025, 1, 1), ReplyWindows((), "UTC")) is None
    assert (
        next_window(utc(2025, 1, 1), ReplyWindows((time(9),), "UTC", frozenset(range(7)))) is None
    )


def test_bad_windows_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        ReplyWindows((time(9),), "Mars/Olympus")
    with pytest.raises(ValueError):
        ReplyWindows((time(9),), "UTC", frozenset({7}))
    with pytest.raises(ValueError):
        next_window(datetime(2025, 1, 1), JAKARTA)


def test_a_week_of_rounds() -> None:
    start, end = utc(2025, 3, 2, 17), utc(2025, 3, 9, 17)  # Mon..Fri local, weekend off
    got = windows_between(start, end, JAKARTA)
    assert len(got) == 15
    assert got[0] == next_window(start, JAKARTA) == utc(2025, 3, 3, 2)
    assert windows_between(end, start, JAKARTA) == []


ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Jakarta",
    "Australia/Sydney",
    "America/St_Johns",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "UTC",
]
QUARTERS = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
WINDOWS = st.builds(
    ReplyWindows,
    times=st.lists(
        st.one_of(st.sampled_from([time(1, 30), time(2), time(2, 30), time(9)]), QUARTERS),
        min_size=1,
        max_size=4,
    ).map(tuple),
    tz=st.sampled_from(ZONES),
    days_off=st.frozensets(st.integers(0, 6), max_size=6),
)
NOW = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
DST_DAYS = [
    utc(2025, 3, 30, 0, 10),
    utc(2025, 10, 26, 0, 5),
    utc(2025, 3, 9, 6),
    utc(2025, 11, 2, 5),
]


def _is_window_instant(instant: datetime, windows: ReplyWindows) -> bool:
    """The instant is a window of its local day, directly or as a DST-gap shift."""
    local = instant.astimezone(windows.zone)
    if local.weekday() in windows.days_off:
        return False
    return any(local_instant(local.date(), t, windows.zone) == instant for t in windows.times)


@settings(max_examples=150, deadline=None)
@given(NOW, WINDOWS)
@example(DST_DAYS[0], ReplyWindows((time(2, 30),), "Europe/Berlin", frozenset({0})))
@example(DST_DAYS[1], ReplyWindows((time(2, 30), time(2)), "Europe/Berlin"))
@example(DST_DAYS[2], ReplyWindows((time(2, 30),), "America/New_York", frozenset({1, 2, 3})))
@example(DST_DAYS[3], ReplyWindows((time(1, 30),), "America/New_York"))
def test_next_window_properties(now: datetime, windows: ReplyWindows) -> None:
    got = next_window(now, windows)
    assert got is not None
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert now < got <= now + timedelta(days=8)
    assert _is_window_instant(got, windows)
    assert windows_between(now, got, windows) == [got]
    # Independent oracle: walk every quarter hour in between; none may be a window.
    probe = now.replace(second=0, microsecond=0, minute=now.minute - now.minute % 15)
    probe += timedelta(minutes=15)
    while probe < got:
        local = probe.astimezone(windows.zone)
        is_window = (
            local.weekday() not in windows.days_off
            and local.time().replace(fold=0) in windows.times
            and local.fold == 0
        )
        assert not is_window, f"missed the window at {probe.isoformat()}"
        probe += timedelta(minutes=15)


@settings(max_examples=100, deadline=None)
@given(NOW, WINDOWS, st.integers(1, 20 * 24))
def test_next_window_chains_through_every_window(
    start: datetime, windows: ReplyWindows, hours: int
) -> None:
    end = start + timedelta(hours=hours)
    got = windows_between(start, end, windows)
    assert got == sorted(set(got))
    assert all(start < w <= end and _is_window_instant(w, windows) for w in got)
    chained = []
    cursor = next_window(start, windows)
    while cursor is not None and cursor <= end:
        chained.append(cursor)
        cursor = next_window(cursor, windows)
    assert got == chained


def test_a_wait_reads_in_days_hours_and_minutes():
    assert format_wait((3 * 60 + 12) * 60_000) == "3 h 12 m"
    assert format_wait(5 * 60_000) == "5 m"
    assert format_wait((2 * 24 + 4) * 3600_000) == "2 d 4 h"
