"""Live-session slots: weekly availability, DST, taken and past slots."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ecounsel.domain.booking import (
    AvailabilityError,
    WeeklyAvailability,
    availability_problems,
    is_bookable,
    parse_weekly,
    slots,
)
from e2ecounsel.domain.cadence import local_instant


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


JAKARTA_WEEKDAYS = parse_weekly("mon-fri 10:00-16:00", "Asia/Jakarta")


def test_parse_weekly() -> None:
    avail = parse_weekly("Mon-Wed 10:00-12:00, 13:00-14:30; sat 9:00-10:00", "Europe/Berlin")
    assert avail.days == {
        0: ((time(10), time(12)), (time(13), time(14, 30))),
        1: ((time(10), time(12)), (time(13), time(14, 30))),
        2: ((time(10), time(12)), (time(13), time(14, 30))),
        5: ((time(9), time(10)),),
    }
    assert parse_weekly("fri-mon 10:00-11:00", "UTC").days.keys() == {4, 5, 6, 0}
    for bad in ["mon 10-12", "funday 10:00-12:00", "mon 25:00-26:00", "mon 12:00-10:00"]:
        with pytest.raises(AvailabilityError):
            parse_weekly(bad, "UTC")
    with pytest.raises(AvailabilityError, match="unknown time zone"):
        parse_weekly("mon 10:00-11:00", "Nowhere/Land")


def test_overlapping_ranges_refused() -> None:
    days = {0: ((time(10), time(12)), (time(11), time(13)))}
    assert availability_problems(days) == ["mon: 10:00-12:00 overlaps 11:00-13:00"]
    with pytest.raises(AvailabilityError, match="overlaps"):
        WeeklyAvailability(days, "UTC")
    assert availability_problems({0: ((time(10), time(12)), (time(12), time(13)))}) == []


def test_slots_in_counselor_zone_as_utc() -> None:
    # Monday 2025-03-03 00:00Z = 07:00 Jakarta. 60-minute slots 10:00..15:00 local = 03:00..08:00Z.
    got = slots(JAKARTA_WEEKDAYS, 60, utc(2025, 3, 3), 1, set())
    assert got == [utc(2025, 3, 3, h) for h in range(3, 9)]


def test_taken_and_past_slots_excluded() -> None:
    got = slots(JAKARTA_WEEKDAYS, 60, utc(2025, 3, 3, 4, 30), 1, {utc(2025, 3, 3, 6)})
    monday = [utc(2025, 3, 3, 5), utc(2025, 3, 3, 7), utc(2025, 3, 3, 8)]
    tuesday_within_24h = [utc(2025, 3, 4, 3), utc(2025, 3, 4, 4)]
    assert got == monday + tuesday_within_24h


def test_taken_booking_of_another_length_blocks_overlaps() -> None:
    got = slots(JAKARTA_WEEKDAYS, 60, utc(2025, 3, 3), 1, {utc(2025, 3, 3, 4, 30)}, 90)
    assert got == [utc(2025, 3, 3, 3), utc(2025, 3, 3, 6), utc(2025, 3, 3, 7), utc(2025, 3, 3, 8)]


def test_weekend_and_horizon() -> None:
    # Friday 2025-03-07 09:00Z = 16:00 Jakarta: nothing left Friday, nothing at the weekend.
    assert slots(JAKARTA_WEEKDAYS, 60, utc(2025, 3, 7, 9), 2, set()) == []
    assert slots(JAKARTA_WEEKDAYS, 60, utc(2025, 3, 7, 9), 3, set())[0] == utc(2025, 3, 10, 3)


def test_dst_spring_forward_day_has_fewer_real_hours() -> None:
    berlin = parse_weekly("sun 01:00-05:00", "Europe/Berlin")
    got = slots(berlin, 60, utc(2025, 3, 29), 2, set())
    # 01:00 CET = 00:00Z ... 05:00 CEST = 03:00Z: three real hours.
    assert got == [utc(2025, 3, 30, 0), utc(2025, 3, 30, 1), utc(2025, 3, 30, 2)]


def test_is_bookable() -> None:
    now = utc(2025, 3, 3)
    assert is_bookable(utc(2025, 3, 3, 3), JAKARTA_WEEKDAYS, 60, now, 7, set())
    assert not is_bookable(utc(2025, 3, 3, 3), JAKARTA_WEEKDAYS, 60, now, 7, {utc(2025, 3, 3, 3)})
    assert not is_bookable(utc(2025, 3, 3, 3, 30), JAKARTA_WEEKDAYS, 60, now, 7, set())
    assert not is_bookable(utc(2025, 3, 2, 3), JAKARTA_WEEKDAYS, 60, now, 7, set())


ZONES = ["Europe/Berlin", "America/New_York", "Asia/Jakarta", "Australia/Sydney", "Pacific/Chatham"]


@st.composite
def availability(draw: st.DrawFn) -> WeeklyAvailability:
    days: dict[int, tuple[tuple[time, time], ...]] = {}
    for weekday in draw(st.sets(st.integers(0, 6), min_size=1)):
        cuts = sorted(draw(st.sets(st.integers(0, 24 * 4 - 1), min_size=2, max_size=6)))
        ranges = []
        for a, b in zip(cuts[::2], cuts[1::2], strict=False):
            ranges.append((time(a // 4, a % 4 * 15), time(b // 4, b % 4 * 15)))
        days[weekday] = tuple(ranges)
    return WeeklyAvailability(days, draw(st.sampled_from(ZONES)))


NOW = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(
    availability(),
    st.sampled_from([15, 30, 45, 60, 90]),
    NOW,
    st.integers(0, 15),
    st.lists(st.integers(0, 15 * 24 * 4), max_size=10),
)
def test_slot_properties(
    avail: WeeklyAvailability, minutes: int, now: datetime, horizon: int, taken_q: list[int]
) -> None:
    base = now.replace(minute=0, second=0, microsecond=0)
    taken = {base + timedelta(minutes=15 * q) for q in taken_q}
    length = timedelta(minutes=minutes)
    got = slots(avail, minutes, now, horizon, taken)
    assert got == sorted(got)
    for a, b in zip(got, got[1:], strict=False):
        assert a + length <= b, "slots overlap"
    for s in got:
        assert s.utcoffset() == timedelta(0)
        assert now <= s < now + timedelta(days=horizon)
        assert not any(t < s + length and s < t + length for t in taken), "overlaps a booking"
        tz = ZoneInfo(avail.tz)
        day = s.astimezone(tz).date()
        assert any(
            local_instant(day, a, tz) <= s and s + length <= local_instant(day, b, tz)
            for a, b in avail.days.get(day.weekday(), ())
        ), "slot outside the counselor's availability"
    # Booking a listed slot removes it and nothing it does not overlap.
    if got:
        booked = slots(avail, minutes, now, horizon, taken | {got[0]})
        assert booked == got[1:]
