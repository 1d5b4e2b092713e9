"""Load and validate the operator-editable ``policies/`` folder.

The folder is data, not code: operators translate texts, add crisis lines and tune
service rules without touching Python. That only works if a mistake is caught when
the policy is loaded, with a line that says which file and key is wrong and what
would be right, instead of a ``KeyError`` in the middle of a client's intake. So the
loader collects *every* problem it can find and raises one :class:`PolicyInvalid`
listing them, one ``file: key (line N): message`` per line.

Layout::

    service.toml               service rules (cadence, SLA, retention, matching, trust, ...)
    crisis.toml                crisis phrases, crisis reply, resources per country
    crisis/<lang>.toml         crisis triage rules (patterns, word classes, context words)
    crisis/*.tsv               labelled messages the rules are tested against
    screening/<id>.toml        screening instruments (PHQ-9, GAD-7)
    <lang>/consent.md          informed consent text, one per language
    <lang>/messages.toml       every text the bot shows, one per language

Nothing here does I/O beyond reading that folder.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

from e2ecounsel.domain import crisis as triage
from e2ecounsel.domain import crisis_corpus, crisis_model, screening
from e2ecounsel.domain.cadence import zone as cadence_zone
from e2ecounsel.domain.intake import InstrumentSpec
from e2ecounsel.errors import PolicyError

log = logging.getLogger(__name__)

#: Set to 1 to make a missing text or parameter an error instead of a logged warning.
STRICT_TEXTS_ENV = "E2ECOUNSEL_STRICT_TEXTS"

TrustMode = Literal["cross-signed-only", "permissive"]
MisfireMode = Literal["fire-late", "summarize"]

TRUST_MODES: tuple[TrustMode, ...] = ("cross-signed-only", "permissive")
MISFIRE_MODES: tuple[MisfireMode, ...] = ("fire-late", "summarize")

#: Country code of the crisis-resource entry used when a client's country is unknown.
FALLBACK_COUNTRY = "other"

#: Parameters :meth:`Policy.text` fills in by itself, so callers need not pass them.
COMMON_PARAMS: frozenset[str] = frozenset(
    {"service_name", "min_age", "replies_per_day", "cadence", "max_chars"}
)

#: Placeholders a consent text may use; filled from ``service.toml`` at load time, so
#: the consent version (a hash of the rendered text) changes when those values change.
CONSENT_PARAMS: frozenset[str] = frozenset(
    {
        "service_name",
        "min_age",
        "replies_per_day",
        "cadence",
        "sla_hours",
        "retention_days",
        "max_chars",
    }
)

#: Placeholders the crisis reply may use.
CRISIS_REPLY_PARAMS: frozenset[str] = frozenset({"resources", "country", "service_name"})

#: What a questionnaire's introduction is given (its one-message start adds the question's).
_SCREENING_INTRO = (
    "instrument_title",
    "count",
    "scale",
    "instrument",
    "number",
    "instruments",
    "max_answer",
)
# Every message key the code may render, with the parameters the caller supplies
# (on top of COMMON_PARAMS). A message may use fewer parameters than supplied, never
# others: an unknown one would fail at render time, in front of a client.
_CATALOG: dict[str, tuple[str, ...]] = {
    # Top level
    "unknown_command": (),
    "unknown_command_counselor": (),
    "not_allowed": (),
    "internal_error": (),
    "message_too_long": (),
    "offline_summary": ("count", "since"),
    # Intake (the contract with e2ecounsel.domain's intake state machine)
    "intake.welcome": ("languages",),
    "intake.language_invalid": ("languages", "count"),
    "intake.consent": ("consent_text", "version"),
    "intake.consent_invalid": (),
    "intake.consent_declined": ("crisis_line",),
    "intake.reconsent": ("consent_text", "version"),
    "intake.age": ("min_age",),
    "intake.age_invalid": (),
    "intake.age_refused": ("crisis_line", "min_age"),
    "intake.country": ("options", "count"),
    "intake.country_invalid": ("count",),
    "intake.zone": ("options", "count"),
    "intake.zone_invalid": ("count",),
    "intake.paused": (),
    "intake.pause_later": (),
    "intake.pause_waiting": (),
    "intake.pseudonym": ("max_len",),
    "intake.pseudonym_invalid": ("max_len",),
    "intake.screening_intro": _SCREENING_INTRO,
    "intake.screening_item": (
        "index",
        "count",
        "question",
        "scale",
        "instrument",
        "item",
        "max_answer",
    ),
    # The introduction and the first question in one message.
    "intake.screening_start": (*_SCREENING_INTRO, "index", "question", "item"),
    "intake.screening_invalid": ("instrument", "max_answer"),
    "intake.screening_skipped": ("instrument_title", "instrument"),
    "intake.screening_result": ("instrument_title", "score", "severity", "instrument"),
    "intake.topic": ("options", "count"),
    "intake.topic_invalid": ("count",),
    "intake.counselor": ("options", "count"),
    "intake.counselor_invalid": ("count",),
    "intake.counselor_none": (),
    "intake.matched": ("counselor_name",),
    "intake.waitlisted": ("position",),
    "intake.unencrypted": (),
    "intake.too_long": ("max_chars",),
    # Shared list formats
    "list.option": ("index", "label"),
    "profile.line": ("index", "name", "credentials", "languages", "specialties"),
    # Help
    "help.client": (),
    "help.counselor": (),
    "help.supervisor": (),
    # Status
    "status.none": (),
    "status.intake": (),
    "status.waitlisted": ("position",),
    "status.active": ("counselor_name", "credentials"),
    "status.awaiting": ("next_window",),
    "status.not_awaiting": ("next_window",),
    "status.dormant": (),
    "status.bookings": ("bookings",),
    "status.no_bookings": (),
    # Counselors and switching
    "counselors.list": ("options",),
    "counselors.none": (),
    "switch.choose": ("options",),
    "switch.invalid": ("count",),
    "switch.none": (),
    "switch.brief_consent": ("counselor_name",),
    "switch.brief_invalid": (),
    "switch.done": ("counselor_name",),
    "switch.cancelled": (),
    "switch.old_room": (),
    "switch.counselor_notice": ("room_link",),
    # Urgent, erase, language
    "urgent.ack": (),
    "erase.confirm": (),
    "erase.done": (),
    "erase.cancelled": (),
    "language.choose": (),
    "language.changed": (),
    "language.invalid": (),
    "language.name": (),
    # Close and survey
    "close.resolved": ("counselor_name",),
    "close.face_to_face": ("counselor_name",),
    "close.continue": ("counselor_name",),
    "close.refer": ("counselor_name",),
    "close.done": ("outcome",),
    "close.continued": (),
    "close.usage": (),
    "survey.ask": (),
    "survey.invalid": (),
    "survey.comment": (),
    "survey.thanks": (),
    # Risk and referral
    "risk.set": ("level",),
    "risk.usage": (),
    "risk.high": (),
    "risk.medium": (),
    "risk.low": (),
    "refer.usage": (),
    "refer.unknown": (),
    "refer.full": ("counselor_name",),
    "refer.same": (),
    "refer.done": ("counselor_name",),
    "refer.client": ("counselor_name",),
    "refer.incoming": ("room_link",),
    # Session room and case channel
    "session.intro": ("counselor_name", "credentials", "crisis_line"),
    "session.room_name": (),
    "case.room_name": (),
    "case.welcome": (),
    "case.number_needed": ("command",),
    "case.unknown": ("number",),
    "case.in_case_channel": (),
    "case.none": (),
    "case.list": ("cases",),
    "case.line": ("number", "pseudonym", "risk"),
    "case.line_awaiting": ("number", "pseudonym", "risk"),
    "case.released": ("case",),
    "case.handed_over": ("case", "room_link"),
    "brief.new": (
        "case",
        "pseudonym",
        "language",
        "country",
        "topic",
        "screening",
        "risk",
        "room_link",
        "consent_date",
    ),
    "brief.screening_line": ("instrument_title", "score", "severity"),
    "brief.screening_skipped": ("instrument_title",),
    "brief.critical": ("instrument_title", "item", "answer"),
    "brief.not_shared": ("room_link", "case"),
    "brief.check_no": (),
    # Crisis triage: the check question, its "no", short acknowledgements while in a crisis
    "crisis.check": (),
    "crisis.check_no": ("crisis_line",),
    "crisis.ack": ("crisis_line",),
    "flag.check_no": ("room_link",),
    # Pages (content-free) and supervisors
    "page.crisis": ("page",),
    "page.urgent": ("page",),
    "page.taken": ("page_id", "name"),
    "take.unknown": (),
    "take.already": ("page_id", "name"),
    "take.gone": ("page_id",),
    "take.done": ("page_id", "room_link"),
    "take.room_intro": ("name", "crisis_line"),
    "take.client_invited": ("name",),
    "take.client_joined": ("name",),
    "take.counselor_here": ("name",),
    "crisis.paged": (),
    "crisis.not_paged": (),
    "supervisors.room_name": (),
    "supervisors.welcome": (),
    "queue.summary": ("awaiting", "oldest_wait", "waitlisted", "oldest_waitlist", "high_risk"),
    "oncall.list": ("names",),
    "oncall.none": (),
    "reassign.done": ("counselor_name",),
    "reassign.usage": (),
    "reassign.unknown_room": (),
    "reassign.unknown_counselor": (),
    "reassign.full": ("counselor_name",),
    # Trust, waitlist, roster changes
    "trust.unsigned_device": (),
    "trust.untrusted_sender": (),
    "edit.ignored": (),
    "dm.not_private": ("crisis_line",),
    "waitlist.position": ("position",),
    "waitlist.assigned": ("counselor_name",),
    "counselor.removed": (),
    "counselor.rematched": ("counselor_name",),
    "counselor.removed_waitlisted": ("position",),
    # Booking and reminders
    "booking.slots": ("options",),
    "booking.none": (),
    "booking.invalid": ("count",),
    "booking.confirmed": ("when", "counselor_name"),
    "booking.taken": (),
    "booking.cancelled": ("when",),
    "booking.nothing_to_cancel": (),
    "booking.offer_closed": (),
    "booking.offered": (),
    "booking.line": ("index", "when", "counselor_name"),
    "booking.counselor_new": ("when", "pseudonym", "room_link"),
    "booking.counselor_cancelled": ("when", "room_link"),
    "reminder.client": ("counselor_name", "when", "starts_in"),
    "reminder.counselor": ("pseudonym", "when", "starts_in", "room_link"),
    "reminder.late": ("when",),
    "reminder.in_hours": ("hours",),
    "reminder.in_minutes": ("minutes",),
    "reminder.starting": ("counselor_name",),
    # Cadence: digests and SLA
    "digest.header": ("count",),
    "digest.line": ("pseudonym", "waiting", "risk", "room_link"),
    "digest.empty": (),
    "sla.reminder": ("pseudonym", "hours", "room_link"),
    "sla.escalation": ("counselor_name", "hours", "room_link"),
    "sla.reassigned_client": ("counselor_name",),
    "sla.offer_switch": ("hours",),
    "sla.reassigned_counselor": ("room_link",),
    "sla.reassigned_previous": ("room_link",),
}

#: Every message key, mapped to the parameters its caller supplies.
MESSAGE_PARAMS: Mapping[str, frozenset[str]] = MappingProxyType(
    {key: frozenset(params) for key, params in _CATALOG.items()}
)

#: Texts that go into room *state* (names), which Matrix does not encrypt: they may not
#: carry any parameter except the service name, so nothing personal can leak there.
STATE_MESSAGES: frozenset[str] = frozenset({"session.room_name", "case.room_name"})

# Parameters a text must show: without them the message would mislead the reader
# (consent without the consent text, a crisis goodbye without the crisis line).
_REQUIRED_PARAMS: dict[str, frozenset[str]] = {
    "intake.consent": frozenset({"consent_text"}),
    "intake.reconsent": frozenset({"consent_text"}),
    "intake.consent_declined": frozenset({"crisis_line"}),
    "intake.age_refused": frozenset({"crisis_line"}),
    "intake.country": frozenset({"options"}),
    "intake.zone": frozenset({"options"}),
    "intake.screening_item": frozenset({"question"}),
    "intake.screening_start": frozenset({"question"}),
    "intake.topic": frozenset({"options"}),
    "intake.counselor": frozenset({"options"}),
    "intake.waitlisted": frozenset({"position"}),
    "intake.matched": frozenset({"counselor_name"}),
    "session.intro": frozenset({"counselor_name", "credentials", "crisis_line"}),
    "page.crisis": frozenset({"page"}),
    "page.urgent": frozenset({"page"}),
    "crisis.ack": frozenset({"crisis_line"}),
    "flag.check_no": frozenset({"room_link"}),
    "take.already": frozenset({"name"}),
    "take.room_intro": frozenset({"name", "crisis_line"}),
    "take.client_invited": frozenset({"name"}),
    "take.client_joined": frozenset({"name"}),
    "take.counselor_here": frozenset({"name"}),
    "counselors.list": frozenset({"options"}),
    "switch.choose": frozenset({"options"}),
    "booking.slots": frozenset({"options"}),
}

_LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_OFFSET_RE = re.compile(r"^(\d{1,4})([mhd])$")
_SERVER_RE = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
_OFFSET_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Topic:
    """A presenting concern offered in intake; ``id`` doubles as a specialty id."""

    id: str
    label: Mapping[str, str]


@dataclass(frozen=True)
class Specialty:
    """A counselor specialty; counselors are registered with these ids."""

    id: str
    label: Mapping[str, str]


@dataclass(frozen=True)
class MatchingWeights:
    """Relative weights of the soft matching criteria (language is a hard rule)."""

    specialty: float
    load: float
    preference: float
    on_call_in_crisis: float


@dataclass(frozen=True)
class OnCallPolicy:
    """Who gets paged, and whether a crisis intake prefers an on-call counselor."""

    page_on_crisis: bool
    page_supervisors_on_crisis: bool
    prefer_in_crisis: bool


@dataclass(frozen=True)
class RetentionPolicy:
    """How long client data is kept after an engagement ends, per jurisdiction."""

    default_days: int
    by_country: Mapping[str, int]

    def days_for(self, country: str | None) -> int:
        """Retention in days for a client's recorded country (default when unknown)."""
        if country is None:
            return self.default_days
        return self.by_country.get(country.upper(), self.default_days)


@dataclass(frozen=True)
class MisfirePolicy:
    """What the scheduler does with reminders that fell due while the bot was down.

    Up to ``grace_seconds`` late, a reminder is sent as if on time. Older ones are
    sent late one by one (``fire-late``) or folded into one summary (``summarize``);
    they are never silently dropped.
    """

    grace_seconds: int
    mode: MisfireMode


@dataclass(frozen=True)
class BookingPolicy:
    """Live-session booking rules."""

    slot_minutes: int
    reminder_offsets: tuple[timedelta, ...]
    horizon_days: int


@dataclass(frozen=True)
class ServicePolicy:
    """Everything from ``service.toml``."""

    name: str
    languages: tuple[str, ...]
    default_language: str
    min_age: int
    replies_per_day: int
    cadence: Mapping[str, str]
    sla_hours: float
    escalate_hours: float
    reassign_hours: float
    dormant_after_days: int
    retention: RetentionPolicy
    matching: MatchingWeights
    supervisors_room: str
    on_call: OnCallPolicy
    max_message_chars: int
    trust_mode: TrustMode
    misfire: MisfirePolicy
    booking: BookingPolicy
    allowed_servers: tuple[str, ...]
    screening: tuple[str, ...]
    topics: tuple[Topic, ...]
    specialties: tuple[Specialty, ...]

    def topic(self, topic_id: str) -> Topic | None:
        """The topic with this id, or None."""
        return next((t for t in self.topics if t.id == topic_id), None)

    def specialty(self, specialty_id: str) -> Specialty | None:
        """The specialty with this id, or None."""
        return next((s for s in self.specialties if s.id == specialty_id), None)


@dataclass(frozen=True)
class ConsentText:
    """A rendered consent text and its version.

    The version is the SHA-256 of the exact text shown, so any edit (or a change of a
    value it quotes, like the reply cadence) asks returning clients to consent again.
    """

    text: str
    version: str


@dataclass(frozen=True)
class Item:
    """One question of a screening instrument, per language."""

    text: Mapping[str, str]


@dataclass(frozen=True)
class Band:
    """A severity band: scores ``lo``..``hi`` inclusive."""

    lo: int
    hi: int
    severity: str
    label: Mapping[str, str]

    def contains(self, score: int) -> bool:
        """Whether ``score`` falls in this band."""
        return self.lo <= score <= self.hi


@dataclass(frozen=True)
class Instrument:
    """A screening questionnaire as data (PHQ-9, GAD-7).

    ``critical_items`` maps a 0-based item index to the lowest answer that is a crisis
    signal: PHQ-9 item 9 "more than 0" is ``{8: 1}``, the same shape as
    ``e2ecounsel.domain.intake.InstrumentSpec.critical``. The TOML numbers items from 1.
    """

    id: str
    title: Mapping[str, str]
    instructions: Mapping[str, str]
    items: tuple[Item, ...]
    scale: Mapping[int, Mapping[str, str]]
    bands: tuple[Band, ...]
    critical_items: Mapping[int, int]

    @property
    def max_score(self) -> int:
        """The highest possible total."""
        return max(self.scale) * len(self.items)

    def spec(self) -> InstrumentSpec:
        """The instrument as the intake scores it (item texts stay here)."""
        return InstrumentSpec(
            id=self.id,
            item_count=len(self.items),
            critical=dict(self.critical_items),
            bands=tuple(screening.Band(b.severity, b.lo, b.hi) for b in self.bands),
            max_answer=self.max_answer,
        )

    def is_critical(self, index: int, answer: int) -> bool:
        """Whether ``answer`` to the 0-based item ``index`` is a crisis signal."""
        lowest = self.critical_items.get(index)
        return lowest is not None and answer >= lowest

    def critical_hits(self, answers: Sequence[int]) -> tuple[int, ...]:
        """0-based indices of the answers that are crisis signals."""
        return tuple(i for i, a in enumerate(answers) if self.is_critical(i, a))

    def band(self, severity: str) -> Band | None:
        """The band with this severity id (``"moderate"``), or None."""
        return next((b for b in self.bands if b.severity == severity), None)

    @property
    def max_answer(self) -> int:
        """The highest value on the answer scale."""
        return max(self.scale)

    def scale_text(self, lang: str) -> str:
        """The answer scale as lines ``0 = Not at all``, in one language."""
        return "\n".join(f"{value} = {labels[lang]}" for value, labels in self.scale.items())


@dataclass(frozen=True)
class Resource:
    """A crisis resource: a hotline, an emergency number, a directory."""

    name: Mapping[str, str]
    contact: str
    note: Mapping[str, str]


@dataclass(frozen=True)
class Zone:
    """One of a country's time zones, as the intake offers it (``zone`` is an IANA id)."""

    zone: str
    label: Mapping[str, str]


@dataclass(frozen=True)
class Country:
    """A country offered in intake, with the crisis resources shown to its clients.

    ``zones`` lists the time zones to choose from when the country has more than one.
    """

    code: str
    label: Mapping[str, str]
    resources: tuple[Resource, ...]
    zones: tuple[Zone, ...] = ()

    def zone_label(self, lang: str, zone: str) -> str:
        for z in self.zones:
            if z.zone == zone:
                return z.label.get(lang, zone)
        return zone


@dataclass(frozen=True)
class CrisisPolicy:
    """Crisis phrases, the crisis reply and resources by country, from ``crisis.toml``."""

    phrases: Mapping[str, tuple[str, ...]]
    reply: Mapping[str, str]
    countries: tuple[Country, ...]
    rules: Mapping[str, triage.LanguageRules] = field(default_factory=dict)
    #: The statistical second opinion trained on the tuning corpus (``None`` without one).
    model: crisis_model.CrisisModel | None = None
    #: When an operator last checked the resources (``last_checked`` in crisis.toml).
    last_checked: date | None = None
    #: How long an answer counts as the answer to the check question.
    check_window: timedelta = timedelta(hours=2)
    #: How long after a full crisis protocol further messages only get an acknowledgement.
    repeat_window: timedelta = timedelta(hours=4)

    def detector(self, with_model: bool = True) -> triage.CrisisDetector:
        """The phrases, triage rules and model compiled into one detector (do it once per
        policy); without the model for the lines it was trained on, which it cannot judge."""
        return triage.CrisisDetector(self.phrases, self.rules, self.model if with_model else None)

    @property
    def all_phrases(self) -> tuple[str, ...]:
        """Every phrase of every language: clients do not always write in theirs."""
        seen: dict[str, None] = {}
        for phrases in self.phrases.values():
            seen.update(dict.fromkeys(phrases))
        return tuple(seen)

    def country(self, code: str | None) -> Country:
        """The entry for ``code``; the fallback entry when unknown or None."""
        if code is not None:
            for country in self.countries:
                if country.code.lower() == code.lower():
                    return country
        return next(c for c in self.countries if c.code == FALLBACK_COUNTRY)

    def resources_text(self, lang: str, code: str | None) -> str:
        """The resources for a country as lines, in one language."""
        lines = []
        for res in self.country(code).resources:
            note = res.note.get(lang, "")
            name = res.name[lang]
            lines.append(f"• {name}: {res.contact}" + (f" ({note})" if note else ""))
        return "\n".join(lines)

    def crisis_line(self, lang: str, code: str | None) -> str:
        """A one-line summary of the resources, for reminders in other texts."""
        return " · ".join(f"{r.name[lang]} {r.contact}" for r in self.country(code).resources)

    def reply_text(self, lang: str, code: str | None, service_name: str = "") -> str:
        """The full crisis reply with the country's resources filled in."""
        country = self.country(code)
        return self.reply[lang].format_map(
            {
                "resources": self.resources_text(lang, code),
                "country": country.label.get(lang, country.code),
                "service_name": service_name,
            }
        )


class PolicyInvalid(PolicyError):
    """The policy folder has one or more problems; ``problems`` lists them all."""

    def __init__(self, problems: Sequence[str], folder: Path):
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"the policy in {folder} has {count} problem{'' if count == 1 else 's'}:"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems))


@dataclass(frozen=True)
class Policy:
    """The whole validated policy.

    ``strict`` decides what :meth:`text` does with a missing message or parameter:
    raise, or log the key and render what it can (production, where a slightly odd text
    beats a client getting no answer). ``None`` means: strict when the environment sets
    ``E2ECOUNSEL_STRICT_TEXTS=1`` (the test suite does, and so may an operator trying a
    changed policy on a staging server).
    """

    root: Path
    service: ServicePolicy
    languages: tuple[str, ...]
    consent: Mapping[str, ConsentText]
    instruments: Mapping[str, Instrument]
    crisis: CrisisPolicy
    messages: Mapping[str, Mapping[str, str]]
    notes: tuple[str, ...] = ()
    strict: bool | None = field(default=None, compare=False)

    def warnings(self) -> list[str]:
        """Things that load fine but an operator should know about."""
        return list(self.notes)

    def language(self, lang: str | None) -> str:
        """``lang`` if the policy has it, else the default language."""
        if lang is not None and lang in self.languages:
            return lang
        return self.service.default_language

    def common_params(self, lang: str) -> dict[str, object]:
        """Parameters every message may use without the caller passing them."""
        service = self.service
        lang = self.language(lang)
        return {
            "service_name": service.name,
            "min_age": service.min_age,
            "replies_per_day": service.replies_per_day,
            "cadence": service.cadence[lang],
            "max_chars": service.max_message_chars,
        }

    def text(self, lang: str, key: str, **params: object) -> str:
        """Render message ``key`` in ``lang`` with ``params`` (plus the common ones)."""
        lang = self.language(lang)
        template = self.messages[lang].get(key)
        if template is None:
            self._fault(f"no message {key!r} in the policy", key)
            template = self.messages[self.service.default_language].get(key, key)
        values: dict[str, object] = self.common_params(lang)
        values.update(params)
        try:
            return template.format_map(values)
        except KeyError as exc:
            self._fault(f"message {key!r} needs the parameter {exc.args[0]!r}", key)
            return template.format_map(_Lenient(values))

    def crisis_reply(self, lang: str, country: str | None) -> str:
        """The crisis text with the resources for ``country``, in ``lang``."""
        return self.crisis.reply_text(self.language(lang), country, self.service.name)

    def crisis_line(self, lang: str, country: str | None) -> str:
        """A one-line crisis resource summary for ``country``."""
        return self.crisis.crisis_line(self.language(lang), country)

    def _fault(self, msg: str, key: str) -> None:
        strict = self.strict
        if strict is None:
            strict = os.environ.get(STRICT_TEXTS_ENV) == "1"
        if strict:
            raise PolicyError(msg, key=key)
        log.warning("policy text problem for key %s; rendering what is available", key)


class _Lenient(dict[str, object]):
    """Leaves unknown ``{name}`` placeholders visible instead of failing."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# ------------------------------------------------------------------ public API


def default_policy_dir() -> Path:
    """The policy folder shipped with the package."""
    import policies

    return Path(policies.__file__).parent


def load_policy(path: Path | None = None, *, strict: bool | None = None) -> Policy:
    """Load and validate a policy folder (the packaged one when ``path`` is None).

    Raises :class:`PolicyInvalid` (a :class:`PolicyError`) listing every problem.
    """
    root = Path(path) if path is not None else default_policy_dir()
    if not root.is_dir():
        raise PolicyError("is not a folder", file=root)
    return _Loader(root, strict).load()


#: ``policy check`` fails when the crisis rules catch fewer of the tuning corpus's at-risk
#: lines than this, in any language.
MIN_CORPUS_RECALL = 0.95
#: The labelled messages shipped in ``crisis/``: the part the rules are tuned on (and the
#: statistical model is trained on), and the held-out part they are judged on.
CRISIS_CORPUS = "crisis/corpus.tsv"
CRISIS_TUNING = (CRISIS_CORPUS, "crisis/heldout.tsv")
CRISIS_HELDOUT = "crisis/heldout2.tsv"


def check_policy(path: Path | None = None) -> list[str]:
    """Validate a policy folder and run its crisis corpus; return its warnings, raise
    PolicyInvalid on errors (a recall below :data:`MIN_CORPUS_RECALL` is one)."""
    policy = load_policy(path)
    problems: list[str] = []
    report = crisis_corpus_report(policy, CRISIS_CORPUS, problems)
    if report is not None:
        for lang, figures in sorted(report.by_lang.items()):
            if figures.recall < MIN_CORPUS_RECALL:
                problems.append(
                    f"{CRISIS_CORPUS}: the crisis rules catch {figures.recall:.3f} of the "
                    f"at-risk '{lang}' lines, below {MIN_CORPUS_RECALL}; "
                    f"`e2ecounsel policy crisis-test {policy.root / CRISIS_CORPUS}` lists "
                    "the misses"
                )
    if problems:
        raise PolicyInvalid(problems, policy.root)
    return policy.warnings()


def crisis_corpus_report(
    policy: Policy, rel: str, problems: list[str]
) -> crisis_corpus.Report | None:
    """The crisis rules judged on the corpus file ``rel`` of the policy folder (``None`` when
    the folder has none), with the model unless it was trained on that file; an unreadable
    file is added to ``problems``."""
    path = policy.root / rel
    if not path.is_file():
        return None
    try:
        samples = crisis_corpus.parse_corpus(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, crisis_corpus.CorpusError) as exc:
        problems.append(f"{rel}: {exc}")
        return None
    detector = policy.crisis.detector(with_model=rel not in CRISIS_TUNING)
    return crisis_corpus.evaluate(detector, samples)


def template_params(template: str) -> set[str]:
    """The ``{name}`` parameters a template uses; ValueError if it is malformed."""
    names: set[str] = set()
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} must be a plain name like {{counselor_name}}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} may not carry a format (':' or '!')")
        names.add(name)
    return names


# ------------------------------------------------------------ validation helpers


def _suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _find_line(source: str, dotted: str) -> int | None:
    """Best-effort 1-based line of a dotted key (``topics[2].label.en``) in TOML text.

    tomllib does not report key positions; following table headers and ``key =``
    lines in order is right for the way policy files are written, and a wrong guess
    only costs a line number.
    """
    lines = source.splitlines()
    parts = [(m.group(1), m.group(2)) for m in re.finditer(r"([^.\[\]]+)(?:\[(\d+)\])?", dotted)]
    start, found = 0, None
    for name, index in parts:
        hit = _search_line(lines, start, name, int(index) if index is not None else None)
        if hit is None:
            break
        start = found = hit
    return found + 1 if found is not None else None


def _search_line(lines: list[str], start: int, name: str, index: int | None) -> int | None:
    esc = re.escape(name)
    header = re.compile(rf'^\s*(\[\[?)\s*(?:[^\]]*\.)?"?{esc}"?\s*\]\]?\s*(#.*)?$')
    key = re.compile(rf'(?:^|[{{,\s])"?{esc}"?\s*[=.]')
    if index is not None:
        seen = -1
        for i in range(start, len(lines)):
            m = header.match(lines[i])
            if m and m.group(1) == "[[":
                seen += 1
                if seen == index:
                    return i
    for i in range(start, len(lines)):
        if header.match(lines[i]) or key.search(lines[i]):
            return i
    return None


class _File:
    """Problems found in one policy file, located by key (and line when findable)."""

    def __init__(self, rel: str, problems: list[str]):
        self.rel = rel
        self.source = ""
        self.problems = problems

    def error(self, key: str, msg: str, *, at: str | None = None) -> None:
        """Record a problem with ``key``; ``at`` is where to look for a line number
        (the enclosing table, for a key that is missing)."""
        if not key:
            self.problems.append(f"{self.rel}: {msg}")
            return
        where_key = key if at is None else at
        line = _find_line(self.source, where_key) if self.source and where_key else None
        where = f" (line {line})" if line else ""
        problem = f"{self.rel}: {key}{where}: {msg}"
        if problem not in self.problems:  # a required key is noticed by two checks
            self.problems.append(problem)

    def parse(self, path: Path) -> dict[str, object] | None:
        try:
            self.source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.error("", "file is missing")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.error("", f"cannot be read ({exc.__class__.__name__})")
            return None
        try:
            return tomllib.loads(self.source)
        except tomllib.TOMLDecodeError as exc:
            self.error("", f"is not valid TOML: {exc}")
            return None


def _type_name(value: object) -> str:
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "text"}
    names.update({list: "a list", dict: "a table"})
    return names.get(type(value), type(value).__name__)


class _Table:
    """Typed access to one TOML table, reporting every problem to its file.

    On a problem a getter reports it and returns a harmless placeholder so the
    validation can go on and find the other problems in the same run.
    """

    def __init__(
        self, file: _File, data: Mapping[str, object], path: str = "", *, absent: bool = False
    ):
        self.file = file
        self.data = data
        self.path = path
        # A missing table is reported once; its keys are then not reported one by one.
        self.absent = absent

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, msg: str) -> None:
        self.file.error(self.key(name) if name else self.path, msg)

    def missing(self, name: str) -> None:
        self.file.error(self.key(name), "is missing", at=self.path)

    def check_keys(self, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
        allowed = list(allowed)
        for name in self.data:
            if name not in allowed:
                self.error(name, "unknown key" + _suggest(name, allowed))
        for name in required:
            if name not in self.data:
                self.missing(name)

    def _get(self, name: str, default: object) -> object:
        if name in self.data:
            return self.data[name]
        if default is None and not self.absent:
            self.missing(name)
        return default

    def text(self, name: str, default: str | None = None, *, empty_ok: bool = False) -> str:
        value = self._get(name, default)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.error(name, f"must be text, not {_type_name(value)}")
            return ""
        if not empty_ok and not value.strip():
            self.error(name, "must not be empty")
        return value

    def integer(self, name: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self._get(name, default)
        if value is None:
            return lo
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"must be a whole number, not {_type_name(value)}")
            return lo
        if not lo <= value <= hi:
            self.error(name, f"must be between {lo} and {hi}, not {value}")
        return value

    def number(self, name: str, lo: float, hi: float, default: float | None = None) -> float:
        value = self._get(name, default)
        if value is None:
            return lo
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"must be a number, not {_type_name(value)}")
            return lo
        if not lo <= value <= hi:
            self.error(name, f"must be between {lo:g} and {hi:g}, not {value:g}")
        return float(value)

    def flag(self, name: str, default: bool | None = None) -> bool:
        value = self._get(name, default)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.error(name, f"must be true or false, not {_type_name(value)}")
            return False
        return value

    def choice(self, name: str, choices: Sequence[str], default: str | None = None) -> str:
        value = self.text(name, default)
        if value and value not in choices:
            options = ", ".join(repr(c) for c in choices)
            self.error(name, f"must be one of {options}, not {value!r}" + _suggest(value, choices))
            return choices[0]
        return value or choices[0]

    def texts(self, name: str, default: Sequence[str] | None = None) -> tuple[str, ...]:
        value = self._get(name, None if default is None else list(default))
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(name, f"must be a list of texts, not {_type_name(value)}")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.error(f"{name}[{i}]", "must be non-empty text")
            else:
                out.append(item)
        return tuple(out)

    def table(self, name: str, *, required: bool = True) -> _Table:
        value = self.data.get(name)
        if value is None:
            if required and not self.absent:
                self.missing(name)
            return _Table(self.file, {}, self.key(name), absent=True)
        if not isinstance(value, dict):
            self.error(name, f"must be a table, not {_type_name(value)}")
            return _Table(self.file, {}, self.key(name), absent=True)
        return _Table(self.file, cast(dict[str, object], value), self.key(name))

    def tables(self, name: str) -> list[_Table]:
        value = self.data.get(name)
        if value is None:
            if not self.absent:
                self.missing(name)
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(name, f"must be a list of [[{self.key(name)}]] tables")
            return []
        return [
            _Table(self.file, cast(dict[str, object], v), f"{self.key(name)}[{i}]")
            for i, v in enumerate(value)
        ]

    def text_per_language(self, name: str, languages: Sequence[str]) -> dict[str, str]:
        """One text for every language, or a table with one text per language."""
        if name not in self.data or isinstance(self.data[name], str):
            return dict.fromkeys(languages, self.text(name))
        return self.per_language(name, languages)

    def per_language(
        self, name: str, languages: Sequence[str], *, required: bool = True
    ) -> dict[str, str]:
        """A ``{en = "...", id = "..."}`` table with one text per language."""
        if name not in self.data and not required:
            return {}
        if name in self.data and not isinstance(self.data[name], dict):
            example = ", ".join(f'{lang} = "..."' for lang in languages)
            self.error(name, f"must have one text per language, like {name} = {{ {example} }}")
            return {}
        sub = self.table(name)
        sub.check_keys(languages, languages if name in self.data else ())
        return {lang: sub.text(lang) for lang in languages if lang in sub.data}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------- loader


_SERVICE_SECTIONS = (
    "service",
    "cadence",
    "sla",
    "retention",
    "matching",
    "supervisors",
    "on_call",
    "limits",
    "trust",
    "reminders",
    "booking",
    "access",
    "screening",
    "topics",
    "specialties",
)


class _Loader:
    """One validation run over a policy folder."""

    def __init__(self, root: Path, strict: bool | None):
        self.root = root
        self.strict = strict
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.service_file = self.file("service.toml")

    def file(self, rel: str) -> _File:
        return _File(rel, self.problems)

    def load(self) -> Policy:
        service = self.load_service()
        languages = service.languages
        messages = self.load_messages(languages, service.default_language)
        consent = self.load_consent(service)
        instruments = self.load_instruments(service.screening, languages)
        crisis = self.load_crisis(languages)
        self.cross_check(service, crisis)
        if self.problems:
            raise PolicyInvalid(self.problems, self.root)
        return Policy(
            root=self.root,
            service=service,
            languages=languages,
            consent=MappingProxyType(consent),
            instruments=MappingProxyType(instruments),
            crisis=crisis,
            messages=MappingProxyType(
                {lang: MappingProxyType(texts) for lang, texts in messages.items()}
            ),
            notes=tuple(self.notes),
            strict=self.strict,
        )

    # ------------------------------------------------------------- service.toml

    def load_service(self) -> ServicePolicy:
        f = self.service_file
        data = f.parse(self.root / "service.toml")
        if data is None:
            # Keep checking the other files with the languages that are present.
            guessed = tuple(sorted(p.parent.name for p in self.root.glob("*/messages.toml"))) or (
                "en",
            )
            return _placeholder_service(guessed)
        root = _Table(f, data)
        root.check_keys(_SERVICE_SECTIONS, [s for s in _SERVICE_SECTIONS if s != "access"])

        svc = root.table("service")
        svc.check_keys(("name", "languages", "default_language", "min_age"))
        name = svc.text("name")
        languages = svc.texts("languages")
        for i, lang in enumerate(languages):
            if not _LANG_RE.match(lang):
                svc.error(f"languages[{i}]", f"{lang!r} is not a language code like 'en' or 'id'")
        if not languages:
            svc.error("languages", "must list at least one language")
            languages = ("en",)
        if len(set(languages)) != len(languages):
            svc.error("languages", "lists a language twice")
        default_language = svc.text("default_language")
        if default_language and default_language not in languages:
            svc.error(
                "default_language",
                f"{default_language!r} is not in languages" + _suggest(default_language, languages),
            )
            default_language = languages[0]
        min_age = svc.integer("min_age", 13, 99)

        cad = root.table("cadence")
        cad.check_keys(("replies_per_day", "description"))
        replies_per_day = cad.integer("replies_per_day", 1, 24)
        cadence = cad.per_language("description", languages)

        sla = root.table("sla")
        sla.check_keys(("sla_hours", "escalate_hours", "reassign_hours", "dormant_after_days"))
        sla_hours = sla.number("sla_hours", 0.25, 24 * 14)
        escalate_hours = sla.number("escalate_hours", 0.25, 24 * 30)
        reassign_hours = sla.number("reassign_hours", 0, 24 * 60, default=0)
        if escalate_hours <= sla_hours:
            sla.error(
                "escalate_hours",
                f"must be greater than sla_hours ({sla_hours:g}): the counselor is reminded "
                "before supervisors are asked to step in",
            )
        if reassign_hours and reassign_hours <= escalate_hours:
            sla.error(
                "reassign_hours",
                f"must be 0 (off) or greater than escalate_hours ({escalate_hours:g})",
            )
        dormant_after_days = sla.integer("dormant_after_days", 1, 365)

        ret = root.table("retention")
        ret.check_keys(("default_days", "countries"))
        default_days = ret.integer("default_days", 1, 36500)
        by_country: dict[str, int] = {}
        countries = ret.table("countries", required=False)
        for code in countries.data:
            if not _COUNTRY_RE.match(code):
                countries.error(code, "must be a two-letter country code like 'ID'")
            by_country[code] = countries.integer(code, 1, 36500)

        mat = root.table("matching")
        weights = ("specialty", "load", "preference", "on_call_in_crisis")
        mat.check_keys(weights, weights)
        matching = MatchingWeights(*(mat.number(w, 0, 1000) for w in weights))

        sup = root.table("supervisors")
        sup.check_keys(("room",))
        supervisors_room = sup.text("room", "", empty_ok=True)
        if supervisors_room and not re.match(r"^[!#][^:\s]+:\S+$", supervisors_room):
            sup.error("room", "must be a room id (!abc:server) or alias (#name:server), or empty")

        onc = root.table("on_call")
        flags = ("page_on_crisis", "page_supervisors_on_crisis")
        onc.check_keys((*flags, "prefer_in_crisis"), (*flags, "prefer_in_crisis"))
        on_call = OnCallPolicy(*(onc.flag(n) for n in (*flags, "prefer_in_crisis")))

        lim = root.table("limits")
        lim.check_keys(("max_message_chars",))
        max_chars = lim.integer("max_message_chars", 200, 60000)

        tru = root.table("trust")
        tru.check_keys(("mode",))
        trust_mode = cast(TrustMode, tru.choice("mode", TRUST_MODES))
        if trust_mode == "permissive":
            self.notes.append(
                "service.toml: trust.mode: 'permissive' also sends to devices that are not "
                "cross-signed, so a device added without the owner's knowledge could read "
                "messages; use 'cross-signed-only' unless your clients cannot verify devices"
            )

        rem = root.table("reminders")
        rem.check_keys(("misfire_grace_seconds", "misfire"))
        misfire = MisfirePolicy(
            rem.integer("misfire_grace_seconds", 0, 7 * 86400),
            cast(MisfireMode, rem.choice("misfire", MISFIRE_MODES)),
        )

        boo = root.table("booking")
        boo.check_keys(("slot_minutes", "reminder_offsets", "horizon_days"))
        offsets: list[timedelta] = []
        for i, raw in enumerate(boo.texts("reminder_offsets", default=[])):
            m = _OFFSET_RE.match(raw.strip())
            if not m or int(m.group(1)) == 0:
                boo.error(f"reminder_offsets[{i}]", f"{raw!r} must look like '24h', '15m' or '2d'")
                continue
            offsets.append(timedelta(**{_OFFSET_UNITS[m.group(2)]: int(m.group(1))}))
        booking = BookingPolicy(
            boo.integer("slot_minutes", 10, 480),
            tuple(sorted(set(offsets), reverse=True)),
            boo.integer("horizon_days", 1, 365),
        )

        acc = root.table("access", required=False)
        acc.check_keys(("allowed_servers",))
        allowed_servers = acc.texts("allowed_servers", default=[])
        for i, server in enumerate(allowed_servers):
            if server != "*" and not _SERVER_RE.match(server):
                acc.error(f"allowed_servers[{i}]", f"{server!r} is not a server name")

        scr = root.table("screening")
        scr.check_keys(("instruments",))
        screening = scr.texts("instruments", default=[])
        for i, inst in enumerate(screening):
            if not _ID_RE.match(inst):
                scr.error(f"instruments[{i}]", f"{inst!r} is not an id like 'phq9'")

        topics = tuple(
            Topic(t.text("id"), t.per_language("label", languages))
            for t in self._entries(root, "topics", ("id", "label"))
        )
        specialties = tuple(
            Specialty(s.text("id"), s.per_language("label", languages))
            for s in self._entries(root, "specialties", ("id", "label"))
        )
        self._unique_ids(root, "topics", [t.id for t in topics])
        self._unique_ids(root, "specialties", [s.id for s in specialties])
        if not topics:
            root.error("topics", "must list at least one topic")
        specialty_ids = {s.id for s in specialties}
        for topic in topics:
            if topic.id != "other" and topic.id not in specialty_ids:
                self.notes.append(
                    f"service.toml: topics: {topic.id!r} is not a specialty, so matching "
                    "cannot prefer counselors for it"
                )

        return ServicePolicy(
            name=name,
            languages=languages,
            default_language=default_language or languages[0],
            min_age=min_age,
            replies_per_day=replies_per_day,
            cadence=MappingProxyType(cadence),
            sla_hours=sla_hours,
            escalate_hours=escalate_hours,
            reassign_hours=reassign_hours,
            dormant_after_days=dormant_after_days,
            retention=RetentionPolicy(default_days, MappingProxyType(by_country)),
            matching=matching,
            supervisors_room=supervisors_room,
            on_call=on_call,
            max_message_chars=max_chars,
            trust_mode=trust_mode,
            misfire=misfire,
            booking=booking,
            allowed_servers=allowed_servers,
            screening=screening,
            topics=topics,
            specialties=specialties,
        )

    def _entries(self, parent: _Table, name: str, keys: Sequence[str]) -> list[_Table]:
        entries = parent.tables(name)
        for entry in entries:
            entry.check_keys(keys, keys)
            ident = entry.data.get("id")
            if isinstance(ident, str) and not _ID_RE.match(ident):
                entry.error("id", f"{ident!r} must be lowercase letters, digits, '-' or '_'")
        return entries

    @staticmethod
    def _unique_ids(parent: _Table, name: str, ids: list[str]) -> None:
        for ident in {i for i in ids if ids.count(i) > 1}:
            parent.error(name, f"id {ident!r} is used twice")

    # --------------------------------------------------------------- messages

    def load_messages(self, languages: Sequence[str], default: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        used: dict[str, dict[str, set[str]]] = {}
        files: dict[str, _File] = {}
        for lang in languages:
            f = files[lang] = self.file(f"{lang}/messages.toml")
            data = f.parse(self.root / lang / "messages.toml")
            texts: dict[str, str] = {}
            if data is not None:
                self._flatten(f, data, "", texts)
                for key in MESSAGE_PARAMS:
                    if key not in texts:
                        parent = key.rpartition(".")[0]
                        f.error(key, "is missing (every language needs every text)", at=parent)
            out[lang] = texts
            used[lang] = {k: self._check_template(f, k, t) for k, t in texts.items()}
        for lang in languages:
            if lang == default or default not in used:
                continue
            f = files[lang]
            for key, params in used[lang].items():
                ref = used[default].get(key)
                if ref is not None and params != ref:
                    f.error(
                        key,
                        f"uses {_fmt(params)} but {default}/messages.toml uses {_fmt(ref)}; "
                        "every language must use the same parameters",
                    )
        for extra in sorted(p.parent.name for p in self.root.glob("*/messages.toml")):
            if extra not in languages:
                self.notes.append(
                    f"{extra}/messages.toml: {extra!r} is not in service.toml languages; ignored"
                )
        return out

    def _flatten(
        self, f: _File, data: Mapping[str, object], prefix: str, out: dict[str, str]
    ) -> None:
        for name, value in data.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict):
                self._flatten(f, cast(dict[str, object], value), key + ".", out)
            elif key not in MESSAGE_PARAMS:
                f.error(key, "unknown message key" + _suggest(key, MESSAGE_PARAMS))
            elif not isinstance(value, str):
                f.error(key, f"must be text, not {_type_name(value)}")
            elif not value.strip():
                f.error(key, "must not be empty")
            else:
                out[key] = value

    def _check_template(self, f: _File, key: str, template: str) -> set[str]:
        try:
            params = template_params(template)
        except ValueError as exc:
            f.error(key, f"{exc} (write {{{{ and }}}} for literal braces)")
            return set()
        allowed = set(MESSAGE_PARAMS[key])
        allowed |= {"service_name"} if key in STATE_MESSAGES else COMMON_PARAMS
        for name in sorted(params - allowed):
            hint = _suggest(name, allowed)
            if key in STATE_MESSAGES:
                why = "room names are not encrypted, so they take no personal parameters"
            else:
                why = "available: " + (_fmt(allowed) or "none")
            f.error(key, f"unknown parameter {{{name}}}{hint}; {why}")
        missing = _REQUIRED_PARAMS.get(key, frozenset()) - params
        if missing:
            f.error(key, f"must show {_fmt(missing)}")
        return params

    # ---------------------------------------------------------------- consent

    def load_consent(self, service: ServicePolicy) -> dict[str, ConsentText]:
        values: dict[str, object] = {
            "service_name": service.name,
            "min_age": service.min_age,
            "replies_per_day": service.replies_per_day,
            "sla_hours": f"{service.sla_hours:g}",
            "retention_days": service.retention.default_days,
            "max_chars": service.max_message_chars,
        }
        out: dict[str, ConsentText] = {}
        for lang in service.languages:
            rel = f"{lang}/consent.md"
            f = self.file(rel)
            try:
                raw = (self.root / lang / "consent.md").read_text(encoding="utf-8")
            except FileNotFoundError:
                f.error("", "file is missing (every language needs a consent text)")
                continue
            except (OSError, UnicodeDecodeError) as exc:
                f.error("", f"cannot be read ({exc.__class__.__name__})")
                continue
            raw = raw.replace("\r\n", "\n").strip()
            if len(raw) < 200:
                f.error("", "is too short to be an informed-consent text")
            try:
                params = template_params(raw)
            except ValueError as exc:
                f.error("", f"{exc} (write {{{{ and }}}} for literal braces)")
                continue
            unknown = params - CONSENT_PARAMS
            if unknown:
                f.error(
                    "", f"unknown placeholder {_fmt(unknown)}; available: {_fmt(CONSENT_PARAMS)}"
                )
                continue
            text = raw.format_map({**values, "cadence": service.cadence.get(lang, "")})
            out[lang] = ConsentText(text=text, version=_hash(text))
        return out

    # ------------------------------------------------------------ instruments

    def load_instruments(
        self, ids: Sequence[str], languages: Sequence[str]
    ) -> dict[str, Instrument]:
        out: dict[str, Instrument] = {}
        for ident in ids:
            inst = self._load_instrument(ident, languages)
            if inst is not None:
                out[ident] = inst
        folder = self.root / "screening"
        for extra in sorted(p.stem for p in folder.glob("*.toml")):
            if extra not in ids:
                self.notes.append(
                    f"screening/{extra}.toml: not listed in service.toml screening.instruments; "
                    "not used"
                )
        return out

    def _load_instrument(self, ident: str, languages: Sequence[str]) -> Instrument | None:
        f = self.file(f"screening/{ident}.toml")
        data = f.parse(self.root / "screening" / f"{ident}.toml")
        if data is None:
            return None
        root = _Table(f, data)
        keys = ("id", "title", "instructions", "scale", "items", "bands", "critical")
        root.check_keys(keys, keys[:-1])
        file_id = root.text("id")
        if file_id and file_id != ident:
            root.error("id", f"is {file_id!r} but the file is named {ident}.toml")
        title = root.per_language("title", languages)
        instructions = root.per_language("instructions", languages)

        scale: dict[int, dict[str, str]] = {}
        for entry in root.tables("scale"):
            entry.check_keys(("value", "label"), ("value", "label"))
            value = entry.integer("value", 0, 10)
            if value in scale:
                entry.error("value", f"{value} appears twice in the scale")
            scale[value] = entry.per_language("label", languages)
        scale = dict(sorted(scale.items()))
        if scale and list(scale) != list(range(len(scale))):
            root.error("scale", f"values must be 0, 1, 2, ... without gaps, not {list(scale)}")

        items: list[Item] = []
        for entry in root.tables("items"):
            entry.check_keys(languages, languages)
            items.append(Item(MappingProxyType({lang: entry.text(lang) for lang in languages})))
        if not items:
            root.error("items", "must list at least one item")
        max_score = (max(scale) if scale else 0) * len(items)

        bands: list[Band] = []
        for entry in root.tables("bands"):
            entry.check_keys(("lo", "hi", "severity", "label"), ("lo", "hi", "severity", "label"))
            lo = entry.integer("lo", 0, 1000)
            hi = entry.integer("hi", 0, 1000)
            if hi < lo:
                entry.error("hi", f"{hi} is below lo ({lo})")
            band = Band(lo, hi, entry.text("severity"), entry.per_language("label", languages))
            bands.append(band)
        bands.sort(key=lambda b: b.lo)
        expected = 0
        for band in bands:
            if band.lo > expected:
                root.error("bands", f"no band covers scores {expected}..{band.lo - 1}")
            elif band.lo < expected:
                root.error("bands", f"bands overlap at score {band.lo}")
            expected = max(expected, band.hi + 1)
        if bands and expected - 1 != max_score:
            root.error(
                "bands",
                f"must end at the maximum score {max_score} "
                f"({len(items)} items x {max(scale) if scale else 0}), not {expected - 1}",
            )

        critical: dict[int, int] = {}
        crit = root.table("critical", required=False)
        crit.check_keys(("items",))
        if "items" in crit.data:
            for entry in crit.tables("items"):
                entry.check_keys(("item", "min_answer"), ("item", "min_answer"))
                number = entry.integer("item", 1, max(len(items), 1))
                top = max(scale, default=0)
                critical[number - 1] = entry.integer("min_answer", min(1, top), top)

        return Instrument(
            id=ident,
            title=MappingProxyType(title),
            instructions=MappingProxyType(instructions),
            items=tuple(items),
            scale=MappingProxyType({v: MappingProxyType(lab) for v, lab in scale.items()}),
            bands=tuple(bands),
            critical_items=MappingProxyType(critical),
        )

    # ------------------------------------------------------------- crisis.toml

    def load_crisis(self, languages: Sequence[str]) -> CrisisPolicy:
        f = self.file("crisis.toml")
        data = f.parse(self.root / "crisis.toml")
        empty = CrisisPolicy({}, {}, (Country(FALLBACK_COUNTRY, {}, ()),))
        if data is None:
            return empty
        root = _Table(f, data)
        root.check_keys(
            ("phrases", "reply", "countries", "last_checked", "triage"),
            ("phrases", "reply", "countries", "last_checked"),
        )
        timing = root.table("triage", required=False)
        timing.check_keys(("check_minutes", "repeat_minutes"))
        check_minutes = timing.integer("check_minutes", 1, 7 * 24 * 60, 120)
        repeat_minutes = timing.integer("repeat_minutes", 0, 7 * 24 * 60, 240)
        last_checked = data.get("last_checked")
        if "last_checked" in data and (
            not isinstance(last_checked, date) or isinstance(last_checked, datetime)
        ):
            root.error("last_checked", "must be a date like 2026-12-01 (no quotes)")
            last_checked = None

        ph = root.table("phrases")
        ph.check_keys(languages, languages)
        phrases: dict[str, tuple[str, ...]] = {}
        for lang in languages:
            if lang not in ph.data:
                continue
            found = ph.texts(lang)
            if not found:
                ph.error(lang, "must list at least one phrase")
            normal = tuple(dict.fromkeys(" ".join(p.casefold().split()) for p in found))
            for phrase in normal:
                if len(phrase) < 4:
                    self.notes.append(
                        f"crisis.toml: phrases.{lang}: {phrase!r} is very short and may match "
                        "ordinary words"
                    )
            phrases[lang] = normal

        reply = {k: v.strip() for k, v in root.per_language("reply", languages).items()}
        ref: set[str] | None = None
        for lang, text in reply.items():
            try:
                params = template_params(text)
            except ValueError as exc:
                root.error(f"reply.{lang}", str(exc))
                continue
            if params - CRISIS_REPLY_PARAMS:
                root.error(
                    f"reply.{lang}",
                    f"unknown placeholder {_fmt(params - CRISIS_REPLY_PARAMS)}; "
                    f"available: {_fmt(CRISIS_REPLY_PARAMS)}",
                )
            if "resources" not in params:
                root.error(f"reply.{lang}", "must show {resources}")
            if ref is not None and params != ref:
                root.error(f"reply.{lang}", "must use the same placeholders in every language")
            ref = params if ref is None else ref

        countries: list[Country] = []
        for entry in root.tables("countries"):
            entry.check_keys(
                ("code", "label", "resources", "zones"), ("code", "label", "resources")
            )
            code = entry.text("code")
            if code and code != FALLBACK_COUNTRY and not _COUNTRY_RE.match(code):
                entry.error("code", f"{code!r} must be a two-letter code like 'ID', or 'other'")
            resources: list[Resource] = []
            for res in entry.tables("resources"):
                res.check_keys(("name", "contact", "note"), ("name", "contact"))
                note = res.per_language("note", languages, required=False)
                resources.append(
                    Resource(res.text_per_language("name", languages), res.text("contact"), note)
                )
            if "resources" in entry.data and not resources:
                entry.error("resources", "must list at least one resource")
            label = entry.per_language("label", languages)
            zones: list[Zone] = []
            for z in entry.tables("zones") if "zones" in entry.data else []:
                z.check_keys(("zone", "label"), ("zone", "label"))
                name = z.text("zone")
                try:
                    cadence_zone(name)
                except ValueError:
                    z.error("zone", f"{name!r} is not a time zone id like 'Asia/Jakarta'")
                zones.append(Zone(name, MappingProxyType(z.per_language("label", languages))))
            if len({z.zone for z in zones}) != len(zones):
                entry.error("zones", "lists a time zone twice")
            countries.append(Country(code, MappingProxyType(label), tuple(resources), tuple(zones)))
        codes = [c.code for c in countries]
        for code in {c for c in codes if codes.count(c) > 1}:
            root.error("countries", f"country {code!r} is listed twice")
        if countries and FALLBACK_COUNTRY not in codes:
            root.error(
                "countries",
                f"needs an entry with code = {FALLBACK_COUNTRY!r} for clients whose country "
                "is not listed",
            )
        if not countries or FALLBACK_COUNTRY not in codes:
            return empty
        return CrisisPolicy(
            phrases=MappingProxyType(phrases),
            reply=MappingProxyType(reply),
            countries=tuple(countries),
            rules=MappingProxyType(self.load_triage(languages)),
            model=self.load_crisis_model(),
            last_checked=last_checked if isinstance(last_checked, date) else None,
            check_window=timedelta(minutes=check_minutes),
            repeat_window=timedelta(minutes=repeat_minutes),
        )

    def load_crisis_model(self) -> crisis_model.CrisisModel | None:
        """The model trained on the tuning files that are there and readable (``None`` when
        none is: the rules judge alone)."""
        samples: list[crisis_corpus.Sample] = []
        for rel in CRISIS_TUNING:
            path = self.root / rel
            if not path.is_file():
                continue
            try:
                samples.extend(crisis_corpus.parse_corpus(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, crisis_corpus.CorpusError) as exc:
                self.notes.append(f"{rel} is not used to train the crisis model: {exc}")
        if not any(s.label for s in samples):
            return None
        return crisis_model.trained(crisis_corpus.training_examples(samples))

    def load_triage(self, languages: Sequence[str]) -> dict[str, triage.LanguageRules]:
        """``crisis/<lang>.toml`` for every language that has one (a folder without them
        keeps only the word-for-word phrases of ``crisis.toml``)."""
        found: dict[str, triage.LanguageRules] = {}
        for lang in languages:
            path = self.root / "crisis" / f"{lang}.toml"
            if not path.is_file():
                self.notes.append(
                    f"crisis/{lang}.toml is missing: only the phrases in crisis.toml are matched"
                )
                continue
            rules = self._load_triage_file(lang, path)
            if rules is not None:
                found[lang] = rules
        return found

    def _load_triage_file(self, lang: str, path: Path) -> triage.LanguageRules | None:
        f = self.file(f"crisis/{lang}.toml")
        data = f.parse(path)
        if data is None:
            return None
        root = _Table(f, data)
        root.check_keys(("idioms", "words", "context", "rules"), ("rules",))
        words = root.table("words", required=False)
        classes: dict[str, tuple[str, ...]] = {}
        for name in words.data:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                words.error(name, "a word class name is lower-case letters, digits and _")
            classes[name] = self._single_words(words, name)
        context = root.table("context", required=False)
        context.check_keys(triage.CONTEXT_KEYS)
        ctx = {key: self._single_words(context, key) for key in triage.CONTEXT_KEYS}
        for i, idiom in enumerate(root.texts("idioms", ())):
            try:
                triage.parse_pattern(idiom, classes)
            except ValueError as exc:
                root.error(f"idioms[{i}]", str(exc))
        specs: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for rule in root.tables("rules"):
            rule.check_keys(("id", "pattern", "outcome"), ("id", "pattern", "outcome"))
            rule_id = rule.text("id")
            if rule_id and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rule_id):
                rule.error("id", f"{rule_id!r}: use lower-case letters, digits and '-'")
            if rule_id in seen:
                rule.error("id", f"{rule_id!r} is used twice")
            seen.add(rule_id)
            outcome = rule.choice("outcome", ("protocol", "check"))
            pattern = rule.text("pattern")
            try:
                triage.parse_pattern(pattern, classes)
            except ValueError as exc:
                rule.error("pattern", str(exc))
                continue
            specs.append((rule_id, pattern, outcome))
        if self.problems:
            return None
        try:
            return triage.build_rules(lang, classes, ctx, specs, root.texts("idioms", ()))
        except ValueError as exc:
            root.error("", str(exc))
            return None

    @staticmethod
    def _single_words(table: _Table, name: str) -> tuple[str, ...]:
        found = table.texts(name, ())
        for i, word in enumerate(found):
            if len(triage.words(word)) != 1:
                table.error(f"{name}[{i}]", f"{word!r} must be one word")
        return tuple(w for w in found if len(triage.words(w)) == 1)

    # ------------------------------------------------------------ cross-checks

    def cross_check(self, service: ServicePolicy, crisis: CrisisPolicy) -> None:
        codes = [c.code for c in crisis.countries if c.code != FALLBACK_COUNTRY]
        if not codes:
            return
        for code in service.retention.by_country:
            if code not in codes:
                self.service_file.error(
                    f"retention.countries.{code}",
                    "is not a country in crisis.toml" + _suggest(code, codes),
                )


def _fmt(names: Iterable[str]) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names))


def _placeholder_service(languages: tuple[str, ...]) -> ServicePolicy:
    """Stand-in used only to keep validating other files when service.toml is unusable."""
    return ServicePolicy(
        name="",
        languages=languages,
        default_language=languages[0],
        min_age=18,
        replies_per_day=1,
        cadence=MappingProxyType(dict.fromkeys(languages, "")),
        sla_hours=1,
        escalate_hours=2,
        reassign_hours=0,
        dormant_after_days=14,
        retention=RetentionPolicy(1, MappingProxyType({})),
        matching=MatchingWeights(0, 0, 0, 0),
        supervisors_room="",
        on_call=OnCallPolicy(False, False, False),
        max_message_chars=4000,
        trust_mode="cross-signed-only",
        misfire=MisfirePolicy(0, "fire-late"),
        booking=BookingPolicy(50, (), 1),
        allowed_servers=(),
        screening=("phq9", "gad7"),
        topics=(),
        specialties=(),
    )
