"""Times as people read them: in their zone, with the zone's name, and a counselor's reply
windows with their days off."""

from __future__ import annotations

import logging
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.persistence.bookings import parse_days_off
from bridge.persistence.store import ClientRecord, Counselor
from e2ecounsel.domain.cadence import ReplyWindows

logger = logging.getLogger(__name__)

# Where a country's clients most likely are, to show times in their zone.
COUNTRY_ZONES = {
    "ID": "Asia/Jakarta",
    "MY": "Asia/Kuala_Lumpur",
    "SG": "Asia/Singapore",
    "PH": "Asia/Manila",
    "US": "America/New_York",
    "GB": "Europe/London",
    "AU": "Australia/Sydney",
    "NL": "Europe/Amsterdam",
    "DE": "Europe/Berlin",
}


def client_zone(client: ClientRecord | None, counselor: Counselor) -> ZoneInfo:
    """The zone to show a client times in: the one they chose in the intake, else their
    country's main zone, else the counselor's."""
    profile = client.profile if client else {}
    chosen = profile.get("zone")
    if isinstance(chosen, str) and chosen:
        try:
            return ZoneInfo(chosen)
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("client zone unknown to this system; using the country's")
    country = str(profile.get("country") or "")
    return ZoneInfo(COUNTRY_ZONES.get(country, counselor.timezone))


def windows_of(c: Counselor, days_off: str = "") -> ReplyWindows:
    return ReplyWindows(
        tuple(time.fromisoformat(t) for t in c.reply_windows),
        c.timezone,
        parse_days_off(days_off) if days_off else frozenset(),
    )


def when(dt: datetime, tz: ZoneInfo) -> str:
    """``dt`` in ``tz``, e.g. "Tue 01 Dec 2026, 14:00 (WIB)"."""
    local = dt.astimezone(tz)
    return f"{local:%a %d %b %Y, %H:%M} ({local.tzname()})"
