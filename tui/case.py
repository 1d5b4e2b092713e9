"""Reading the case channel: the machine-readable field of the bot's messages.

The bot attaches :data:`e2ecounsel.casechannel.FIELD` to every message it sends a
counselor about a case (see :mod:`e2ecounsel.casechannel`); the app reads that,
never the human-readable text, so rewording ``messages.toml`` changes nothing here.
The field is still text from a room: every value is checked, cleaned of terminal
control sequences and bounded before it reaches the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from e2ecounsel.casechannel import RISKS, CaseEvent, Risk
from e2ecounsel.domain.text import clean_text
from tui.queue import Brief, Page


def text(value: Any, limit: int) -> str:
    """A field's value as safe, bounded, one-line text ("" for anything but a
    string or a number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return " ".join(clean_text(str(value), limit).split())


def risk_of(value: Any) -> Risk | None:
    """A risk id from the field (``"high"``…), or None for anything else."""
    for level in RISKS:
        if value == level:
            return level
    return None


def screening_line(item: Any) -> str:
    """``{"title": "PHQ-9", "score": 7, "severity_label": "mild"}`` → ``"PHQ-9: 7 (mild)"``."""
    if not isinstance(item, Mapping):
        return ""
    title = text(item.get("title"), 60) or text(item.get("instrument"), 40)
    if not title:
        return ""
    score = item.get("score")
    if score is None or isinstance(score, bool) or not isinstance(score, int | float):
        return f"{title}: skipped"
    label = text(item.get("severity_label"), 60) or text(item.get("severity"), 40)
    return f"{title}: {score:g} ({label})" if label else f"{title}: {score:g}"


def critical_line(item: Any) -> str:
    """One critical screening answer (e.g. PHQ-9 item 9 above 0), as the card shows it."""
    if isinstance(item, Mapping):
        title = text(item.get("title"), 60) or text(item.get("instrument"), 40)
        number = text(item.get("item"), 10)
        answer = text(item.get("answer"), 10)
        parts = [title or "Screening"]
        if number:
            parts.append(f"item {number}")
        line = " ".join(parts)
        return f"{line}: answer {answer}" if answer else line
    return text(item, 200)


def flag_of(value: Any) -> str:
    """A flag's reason (``"check:no"``…) as safe text; "" for anything but a string."""
    return text(value, 40) if isinstance(value, str) else ""


def _lines(values: Any, one: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(line for line in (one(v) for v in values[:40]) if line)


def brief_of(data: Mapping[str, Any], ts_ms: int) -> Brief:
    """The client card's brief from a ``brief`` event's data."""
    return Brief(
        pseudonym=text(data.get("pseudonym"), 80),
        language=text(data.get("language"), 20),
        country=text(data.get("country"), 80),
        topic=text(data.get("topic"), 120),
        risk=risk_of(data.get("risk")) or "",
        consent_date=text(data.get("consent_date"), 40),
        screening=_lines(data.get("screening"), screening_line),
        critical=_lines(data.get("critical"), critical_line),
        flags=_lines(data.get("flags"), flag_of),
        shared=data.get("shared") is not False,
        received_ms=ts_ms,
    )


def page_of(event: CaseEvent, ts_ms: int) -> Page | None:
    """A page from a ``page`` event; None without a page id (nothing to take)."""
    page_id = text(event.data.get("page"), 40)
    if not page_id:
        return None
    client_room = event.data.get("client_room")
    return Page(
        page_id=page_id,
        ts_ms=ts_ms,
        reason=text(event.data.get("reason"), 200),
        engagement=event.engagement,
        room_id=event.room,
        client_room=client_room
        if isinstance(client_room, str) and client_room.startswith("!")
        else None,
    )


def booking_of(data: Mapping[str, Any]) -> tuple[str, datetime | None]:
    """(booking id, start) from a ``booking`` event; start None when it was
    cancelled (or its time is unreadable)."""
    booking = text(data.get("booking"), 40)
    if data.get("status") == "cancelled":
        return booking, None
    start = data.get("start")
    try:
        when = datetime.fromisoformat(start) if isinstance(start, str) else None
    except ValueError:
        when = None
    if when is not None and when.tzinfo is None:
        when = None  # a time without its zone cannot be shown right
    return booking, when
