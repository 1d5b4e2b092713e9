"""The machine-readable side of the case channel, shared by the bot and the counselor app.

Every message the bot sends a counselor about a case (a brief, a risk change, a page,
a digest, a reminder, a booking, the answer to a command) carries, next to its
human-readable ``body``, one namespaced field in the (end-to-end encrypted) event
content::

    "org.e2ecounsel.case": {"v": 1, "kind": "brief", "engagement": 12,
                            "room": "!abc:server", "data": {...}}

The counselor app reads only this field, never the text, so an operator who rewords
``messages.toml`` changes what people read and nothing else. The field lives inside the
encrypted content, so it is as private as the body: the homeserver never sees it.

Risk levels and outcomes are defined here once, for the bot, the app and the policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

#: The key of the field in the event content.
FIELD: Final = "org.e2ecounsel.case"
#: The version this code writes and reads. A message of another version is ignored.
VERSION: Final = 1

Kind = Literal[
    # a new client (or one handed over). data: "case" (the engagement id, the number
    # counselors address the case by), "shared" (bool), "risk"; only when shared:
    # "pseudonym", "language", "country", "country_label", "topic", "topic_label",
    # "consent_date" (YYYY-MM-DD), "screening" = [{instrument, title, score, severity,
    # severity_label}] (no score: skipped), "critical" = [{instrument, title, item, answer}]
    "brief",
    "risk",  # the engagement's risk level changed: data["risk"]
    "page",  # a crisis page: data["page"] (id), data["reason"], data["client_room"] (optional)
    "take",  # someone answered a page: data["page"], data["by"]
    "digest",  # who waits at a reply window: data["waiting"] = [{engagement, room, since_ms, risk}]
    # SLA or booking reminder: data["reason"] ("sla": data["since_ms"]; "booking":
    # data["booking"], data["due"] (ISO time))
    "reminder",
    "booking",  # a live session booked or cancelled: data["booking"], data["start"], data["status"]
    "closed",  # the engagement ended and its room is read-only: data["outcome"]
    "released",  # the counselor no longer has this client (switch, referral, erasure); drop it
    "flag",  # a non-crisis signal for the queue, e.g. a crisis check answered "no": data["reason"]
    "reply",  # the bot's answer to a counselor command: data["command"], data["ok"]
    "notice",  # anything else addressed to the counselor (welcome, help)
]
KINDS: Final[frozenset[str]] = frozenset(get_args(Kind))

Risk = Literal["high", "medium", "low"]
#: Highest first: the order the queue sorts by.
RISKS: Final[tuple[Risk, ...]] = ("high", "medium", "low")

Outcome = Literal["resolved", "face_to_face", "continue", "refer"]
#: The four outcomes of counseling, as stored and as written in the case channel.
OUTCOMES: Final[tuple[Outcome, ...]] = ("resolved", "face_to_face", "continue", "refer")


@dataclass(frozen=True)
class CaseEvent:
    """One machine-readable fact from the case channel."""

    kind: Kind
    engagement: int | None = None
    room: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_content(self) -> dict[str, Any]:
        """The value to put under :data:`FIELD` in an event's content."""
        out: dict[str, Any] = {"v": VERSION, "kind": self.kind, "data": dict(self.data)}
        if self.engagement is not None:
            out["engagement"] = self.engagement
        if self.room is not None:
            out["room"] = self.room
        return out


def attach(content: dict[str, Any], event: CaseEvent) -> dict[str, Any]:
    """``content`` with ``event`` attached (the dict is changed and returned)."""
    content[FIELD] = event.to_content()
    return content


def parse(content: Mapping[str, Any]) -> CaseEvent | None:
    """The case event in a received event's content; None if absent or malformed.

    Everything is checked, because a case channel is a room like any other: a
    malformed or foreign field is ignored rather than trusted.
    """
    raw = content.get(FIELD)
    if not isinstance(raw, Mapping) or raw.get("v") != VERSION:
        return None
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return None
    engagement = raw.get("engagement")
    if engagement is not None and (not isinstance(engagement, int) or isinstance(engagement, bool)):
        return None
    room = raw.get("room")
    if room is not None and (not isinstance(room, str) or not room.startswith("!")):
        return None
    data = raw.get("data", {})
    if not isinstance(data, Mapping):
        return None
    return CaseEvent(kind, engagement, room, dict(data))  # type: ignore[arg-type]
