"""Checking what an operator types for ``e2ecounsel counselor …``, before anything is stored.

Pure functions: text in, a :class:`~bridge.persistence.store.Counselor` (or a value) out, or
a :class:`CommandError` whose message is one friendly line saying what is wrong
and, where a near miss is likely (a time zone, a specialty), what was probably
meant. Names and credentials are shown to clients as the counselor's profile,
so they are checked for length, and a control character is refused rather than
silently removed.
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from collections.abc import Collection, Iterable

from bridge.persistence.store import Counselor
from e2ecounsel.errors import CommandError
from e2ecounsel.policy.toml import suggest

MAX_CAPACITY = 500
MAX_NAME = 80
MAX_CREDENTIALS = 200

# Matrix identifier grammar: user localpart [a-z0-9._=/+-], server name = host[:port].
_MXID_RE = re.compile(
    r"@[a-z0-9._=/+-]+:"
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?)"
    r"(?::[0-9]{1,5})?"
)
_WINDOW_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e]")


def parse_mxid(text: str) -> str:
    """A Matrix user id ``@local:server``, or CommandError."""
    text = text.strip()
    if len(text) > 255 or not _MXID_RE.fullmatch(text):
        hint = ""
        if text and not text.startswith("@"):
            hint = f" (did you mean '@{text}'?)" if ":" in text else ""
        raise CommandError(
            f"{text!r} is not a Matrix user id; write it as @name:server, e.g. "
            f"@dewi:example.org{hint}"
        )
    return text


def parse_on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    raise CommandError(f"expected 'on' or 'off', got {text!r}")


def _line(text: str, what: str, limit: int) -> str:
    value = text.strip()
    if not value:
        raise CommandError(f"the {what} must not be empty")
    if len(value) > limit:
        raise CommandError(f"the {what} is {len(value)} characters; at most {limit} are allowed")
    if _CONTROL_RE.search(value):
        raise CommandError(f"the {what} contains control characters; type it as plain text")
    return value


def parse_name(text: str) -> str:
    return _line(text, "name", MAX_NAME)


def parse_credentials(text: str) -> str:
    return _line(text, "credentials", MAX_CREDENTIALS)


def _items(text: str | Iterable[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    seen: dict[str, None] = {}
    for part in parts:
        item = part.strip().lower()
        if item:
            seen.setdefault(item, None)
    return list(seen)


def parse_languages(text: str | Iterable[str], known: Collection[str]) -> tuple[str, ...]:
    """Language codes the policy offers, in the order given, without repeats."""
    codes = _items(text)
    if not codes:
        raise CommandError("give at least one language, e.g. --languages " + ",".join(known))
    for code in codes:
        if code not in known:
            raise CommandError(
                f"unknown language {code!r}{suggest(code, known)}; "
                f"the policy offers: {', '.join(sorted(known))}"
            )
    return tuple(codes)


def parse_specialties(text: str | Iterable[str], known: Collection[str]) -> tuple[str, ...]:
    """Specialty ids from the policy, in the order given, without repeats."""
    ids = _items(text)
    if not ids:
        raise CommandError("give at least one specialty, e.g. --specialties anxiety,career")
    for item in ids:
        if item not in known:
            raise CommandError(
                f"unknown specialty {item!r}{suggest(item, known)}; "
                f"known specialties: {', '.join(sorted(known))}"
            )
    return tuple(ids)


def parse_capacity(text: str | int) -> int:
    """How many active clients at most: a whole number from 1 to :data:`MAX_CAPACITY`."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise CommandError(
            f"capacity must be a whole number from 1 to {MAX_CAPACITY}, got {text!r}"
        ) from None
    if value <= 0:
        raise CommandError(
            "capacity must be at least 1: a counselor with no capacity never gets a client "
            "(to take someone off the roster, use `e2ecounsel counselor remove`)"
        )
    if value > MAX_CAPACITY:
        raise CommandError(f"capacity {value} is too large; at most {MAX_CAPACITY}")
    return value


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _suggest_zone(text: str, zones: Collection[str]) -> str:
    lowered = {z.lower(): z for z in zones}
    key = text.strip().lower().replace(" ", "_")
    if key in lowered:
        return lowered[key]
    cities = {z.rsplit("/", 1)[-1].lower(): z for z in sorted(zones) if "/" in z}
    if key in cities:
        return cities[key]
    close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.6)
    if close:
        return lowered[close[0]]
    close = difflib.get_close_matches(key, list(cities), n=1, cutoff=0.75)
    return cities[close[0]] if close else ""


def parse_timezone(text: str) -> str:
    """An IANA time zone name such as ``Asia/Jakarta``; suggests the nearest one if unknown."""
    name = text.strip()
    zones = _zones()
    if name in zones:
        return name
    suggestion = _suggest_zone(name, zones)
    hint = f"; did you mean {suggestion!r}?" if suggestion else "; use a name like 'Asia/Jakarta'"
    raise CommandError(f"unknown time zone {name!r}{hint}")


def parse_reply_windows(text: str | Iterable[str]) -> tuple[str, ...]:
    """Local reply times ``HH:MM``, sorted and without repeats; at least one."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if not parts:
        raise CommandError("give at least one reply window, e.g. --reply-windows 09:00,13:00,19:00")
    times: set[str] = set()
    for part in parts:
        m = _WINDOW_RE.fullmatch(part)
        if m is None:
            raise CommandError(
                f"reply window {part!r} is not a time; use 24-hour HH:MM, e.g. 09:00 or 19:30"
            )
        times.add(f"{int(m.group(1)):02d}:{m.group(2)}")
    return tuple(sorted(times))


def parse_counselor_args(
    user_id: str,
    *,
    name: str,
    credentials: str,
    languages: str | Iterable[str],
    specialties: str | Iterable[str],
    capacity: str | int,
    timezone: str,
    reply_windows: str | Iterable[str],
    on_call: bool = False,
    known_languages: Collection[str],
    known_specialties: Collection[str],
) -> Counselor:
    """Check every value of ``counselor add`` and build the :class:`Counselor`.

    ``known_languages`` and ``known_specialties`` come from the policy
    (``policy.languages`` and the ids of ``policy.service.specialties``).
    """
    return Counselor(
        user_id=parse_mxid(user_id),
        name=parse_name(name),
        credentials=parse_credentials(credentials),
        languages=parse_languages(languages, known_languages),
        specialties=parse_specialties(specialties, known_specialties),
        capacity=parse_capacity(capacity),
        timezone=parse_timezone(timezone),
        reply_windows=parse_reply_windows(reply_windows),
        on_call=on_call,
        active=True,
    )
