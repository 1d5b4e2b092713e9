"""The validated policy as frozen data: what the rest of the code reads, never TOML."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from e2ecounsel.domain import crisis as triage
from e2ecounsel.domain import crisis_model, screening
from e2ecounsel.domain.intake import InstrumentSpec
from e2ecounsel.domain.text import fold_answer, normalize_command
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

Audience = Literal["client", "counselor", "supervisor"]
#: Who may use a command: a client (chat with the bot, session room), a counselor (case
#: channel, session room) or a supervisor (the supervisors' room).
AUDIENCES: tuple[Audience, ...] = ("client", "counselor", "supervisor")

Meaning = Literal["yes", "no", "skip"]
#: The answer lists every language's ``commands.toml`` has under ``[answers]``.
ANSWERS: tuple[str, ...] = ("yes", "no", "skip", "agree", "decline", "auto", "now", "later")
#: Answer lists that must not share a word in one language: each word means one thing.
ANSWER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("yes", "no", "skip"),
    ("agree", "decline"),
    ("now", "later"),
)


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
    #: Days the bridge keeps handled inbox rows, sent outbox rows, finished jobs.
    operational_days: int = 14

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

    def critical_hits(self, answers: Sequence[int]) -> tuple[int, ...]:
        """0-based indices of the answers that are crisis signals."""
        return tuple(screening.critical_items(answers, self.critical_items))

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


@dataclass(frozen=True)
class Command:
    """One command of one language: its stable id, who may use it, its words and help."""

    id: str
    audience: Audience
    #: What may be typed, folded like :func:`normalize_command` folds a typed word; the
    #: first is the one help shows.
    words: tuple[str, ...]
    help: str
    #: What follows the word in help (``N``, ``N high|medium|low``), or nothing.
    args: str = ""


@dataclass(frozen=True)
class Vocabulary:
    """The words of one language (``<lang>/commands.toml``): commands and answers.

    The code knows command ids (``status``, ``close``) and answer names (``yes``); this maps
    what people type to them, so a new language or a new alias is data only.
    """

    lang: str
    #: Every command, in file order, keyed by (audience, id).
    entries: Mapping[tuple[Audience, str], Command]
    #: Each answer list of :data:`ANSWERS`, folded like :func:`fold_answer` folds an answer.
    answers: Mapping[str, frozenset[str]]
    _lookup: Mapping[tuple[Audience, str], str] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        lookup = {(c.audience, w): c.id for c in self.entries.values() for w in c.words}
        object.__setattr__(self, "_lookup", MappingProxyType(lookup))

    def command(self, word: str, audience: Audience = "client") -> str | None:
        """The id of the command ``word`` names for ``audience`` (``"!Status"`` -> ``"status"``).

        ``word`` may be a whole chat line; only its first word counts.
        """
        return self._lookup.get((audience, normalize_command(word)[0]))

    def entry(self, command_id: str, audience: Audience = "client") -> Command:
        """The command ``command_id`` of ``audience``; KeyError names an id the file lacks."""
        try:
            return self.entries[(audience, command_id)]
        except KeyError:
            raise KeyError(f"no {audience} command {command_id!r} in {self.lang}") from None

    def words(self, command_id: str, audience: Audience = "client") -> tuple[str, ...]:
        """What may be typed for the command; the first is the one help shows."""
        return self.entry(command_id, audience).words

    def help(self, command_id: str, audience: Audience = "client") -> str:
        """The one-line help of the command."""
        return self.entry(command_id, audience).help

    def args(self, command_id: str, audience: Audience = "client") -> str:
        """What help shows after the command's word (``N``), or ``""``."""
        return self.entry(command_id, audience).args

    def commands(self, audience: Audience) -> tuple[str, ...]:
        """The ids of ``audience``'s commands, in file order (the order help lists them)."""
        return tuple(c.id for c in self.entries.values() if c.audience == audience)

    @property
    def yes(self) -> frozenset[str]:
        return self.answers["yes"]

    @property
    def no(self) -> frozenset[str]:
        return self.answers["no"]

    @property
    def skip(self) -> frozenset[str]:
        return self.answers["skip"]

    def meaning(self, answer: str) -> Meaning | None:
        """``"yes"``, ``"no"`` or ``"skip"`` when the whole answer is one of those words
        (``" Ya! "`` -> ``"yes"``), else None."""
        folded = fold_answer(answer)
        for name in ("yes", "no", "skip"):
            if folded in self.answers[name]:
                return name
        return None


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
    vocabularies: Mapping[str, Vocabulary]
    notes: tuple[str, ...] = ()
    strict: bool | None = field(default=None, compare=False)
    _answer_words: Mapping[str, frozenset[str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        combined = {
            name: frozenset().union(*(v.answers[name] for v in self.vocabularies.values()))
            for name in ANSWERS
        }
        object.__setattr__(self, "_answer_words", MappingProxyType(combined))

    def warnings(self) -> list[str]:
        """Things that load fine but an operator should know about."""
        return list(self.notes)

    def language(self, lang: str | None) -> str:
        """``lang`` if the policy has it, else the default language."""
        if lang is not None and lang in self.languages:
            return lang
        return self.service.default_language

    def vocabulary(self, lang: str | None) -> Vocabulary:
        """The words of ``lang`` (the default language's when the policy lacks ``lang``)."""
        return self.vocabularies[self.language(lang)]

    def _in_order(self, lang: str | None) -> list[Vocabulary]:
        first = self.language(lang)
        rest = [x for x in (self.service.default_language, *self.languages) if x != first]
        return [self.vocabularies[x] for x in dict.fromkeys([first, *rest])]

    def command(
        self, word: str, audience: Audience = "client", lang: str | None = None
    ) -> str | None:
        """The command id ``word`` names, in ``lang`` first, then in any other language
        (a client writing Indonesian who types ``help`` is understood)."""
        for vocabulary in self._in_order(lang):
            found = vocabulary.command(word, audience)
            if found is not None:
                return found
        return None

    def meaning(self, answer: str, lang: str | None = None) -> Meaning | None:
        """``"yes"``, ``"no"`` or ``"skip"``, in ``lang`` first, then in any other language."""
        for vocabulary in self._in_order(lang):
            found = vocabulary.meaning(answer)
            if found is not None:
                return found
        return None

    def answer_words(self) -> Mapping[str, frozenset[str]]:
        """Every answer list of :data:`ANSWERS` with the words of all languages (what the
        intake accepts, whatever language a client picked); combined once, when loaded."""
        return self._answer_words

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
