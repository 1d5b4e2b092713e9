"""The intake conversation as a pure state machine.

``start(ctx)`` opens an intake; ``advance(state, text, ctx)`` consumes one client message and
returns a ``Step``: the new state, the replies to send (message keys, never text) and the events
the bridge acts on (record consent, page on-call, match). The state is a small frozen value that
round-trips through JSON (``to_dict``/``from_dict``) so the bridge can persist it after every
step and resume after a restart; deduplicating events (by Matrix event id) is the bridge's job,
not this module's.

Steps, in order: language -> consent -> age -> country -> zone -> pseudonym -> screening (each
instrument, one item at a time) -> topic -> counselor -> done. Empty option lists (no countries,
instruments or topics in the policy) skip their step; the zone is asked only of a client whose
country spans several time zones (Indonesia: WIB, WITA, WIT) and set at once when it has one.
``declined`` and ``age_refused`` are terminal: any further message starts a new intake.
``reconsent`` interrupts any later step when the consent text changed (see ``needs_reconsent``
and ``begin_reconsent``) and returns to it on ``agree``. ``paused`` interrupts the intake after a
disclosure (a PHQ-9 item 9 answer above 0, or a crisis message the bridge reports with
``pause``): the bridge has given the crisis reply, and the questions wait until the client says
``now`` (``later`` or anything else keeps them waiting).

Replies and their params (the bridge adds the params marked *bridge*; list params are raw ids, in
display order, which the bridge renders as a numbered list in the client's language):

=========================  =========================================================================
key                        params
=========================  =========================================================================
intake.welcome             languages (tuple of codes; "1" picks the first)
intake.language_invalid    languages, count
intake.consent             version; *bridge*: consent_text
intake.consent_invalid     (none)
intake.consent_declined    (none); *bridge*: crisis_line
intake.reconsent           version; *bridge*: consent_text
intake.age                 min_age
intake.age_invalid         min_age
intake.age_refused         min_age; *bridge*: crisis_line
intake.country             options (country codes), count
intake.country_invalid     count
intake.zone                options (IANA zone ids of the client's country), count; *bridge*:
                           the options as the zones' labels
intake.zone_invalid        count
intake.pseudonym           max_len
intake.pseudonym_invalid   max_len
intake.screening_intro     instrument (id), number (1-based position), instruments (how many),
                           count (items), max_answer; *bridge*: instrument_title, scale
intake.screening_item      instrument, item (0-based index into the policy's items), index
                           (1-based), count, max_answer; *bridge*: question, scale
intake.screening_invalid   instrument, max_answer
intake.screening_skipped   instrument; *bridge*: instrument_title
intake.screening_result    instrument, score, severity (band id, "" if no band);
                           *bridge*: instrument_title, and severity translated to a label
intake.topic               options (topic ids), count
intake.topic_invalid       count
intake.counselor           options (counselor ids; remembered in the state), count
intake.counselor_invalid   count
intake.counselor_none      (none)
intake.too_long            max_chars
intake.paused              (none): a counselor is being asked to come; go on now or later?
intake.pause_later         (none)
intake.pause_waiting       (none): any other message while paused
=========================  =========================================================================

A wrong answer leaves the state unchanged and replies with the ``*_invalid`` hint followed by the
question again (for ``language`` and ``consent`` the hint alone, as it already repeats the choice).
``intake.matched``, ``intake.waitlisted`` and ``intake.unencrypted`` are sent by the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from e2ecounsel.domain import screening
from e2ecounsel.domain.replies import Reply
from e2ecounsel.domain.screening import Band
from e2ecounsel.domain.text import clean_text, fold_answer, parse_number

PSEUDONYM_MAX = 40
STATE_FORMAT = 1


class Stage(StrEnum):
    """Where an intake stands (``IntakeState.step``)."""

    LANGUAGE = "language"
    CONSENT = "consent"
    AGE = "age"
    COUNTRY = "country"
    ZONE = "zone"
    PSEUDONYM = "pseudonym"
    SCREENING = "screening"
    TOPIC = "topic"
    COUNSELOR = "counselor"
    DONE = "done"
    RECONSENT = "reconsent"
    PAUSED = "paused"
    DECLINED = "declined"
    AGE_REFUSED = "age_refused"


_PROGRESS: tuple[Stage, ...] = (
    Stage.LANGUAGE,
    Stage.CONSENT,
    Stage.AGE,
    Stage.COUNTRY,
    Stage.ZONE,
    Stage.PSEUDONYM,
    Stage.SCREENING,
    Stage.TOPIC,
    Stage.COUNSELOR,
    Stage.DONE,
)
_TERMINAL = frozenset({Stage.DECLINED, Stage.AGE_REFUSED})
#: Steps an intake can be paused at (and resumed to): after the consent, before the end.
_PAUSABLE = _PROGRESS[2:-1]


# --------------------------------------------------------------------------------------- context


@dataclass(frozen=True)
class InstrumentSpec:
    """A questionnaire as intake needs it; the item texts stay in the policy.

    ``critical`` maps a 0-based item index to the lowest answer that signals risk
    (PHQ-9 item 9 "> 0": ``{8: 1}``).
    """

    id: str
    item_count: int
    critical: Mapping[int, int] = field(default_factory=dict)
    bands: tuple[Band, ...] = ()
    max_answer: int = 3


@dataclass(frozen=True)
class IntakeContext:
    """Everything from policy and roster that intake decisions depend on.

    ``counselor_options`` are the profiles offered right now (full ones left out); it may change
    between messages, which is why the offered list is remembered in the state. ``zones`` maps a
    country code to its time zones (IANA ids), for countries that list them.
    """

    languages: tuple[str, ...]
    min_age: int
    instruments: tuple[InstrumentSpec, ...]
    countries: tuple[str, ...]
    topics: tuple[str, ...]
    counselor_options: tuple[str, ...]
    max_chars: int
    consent_version: str
    vocabulary: Mapping[str, frozenset[str]]
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ConsentGiven:
    """Record consent to this policy version (with the time of the event)."""

    version: str


@dataclass(frozen=True)
class ConsentDeclined:
    """Store nothing about the client; write one content-free audit line."""


@dataclass(frozen=True)
class AgeRefused:
    """Under the minimum age: the intake ends; store nothing but an audit line."""


@dataclass(frozen=True)
class CrisisDetected:
    """Run the crisis protocol now, before sending this step's other replies.

    ``reason`` is content-free (e.g. ``"screening:phq9:item9"``) and safe to log and audit.
    """

    reason: str


@dataclass(frozen=True)
class InstrumentScored:
    """An instrument was completed (skipped ones produce no score)."""

    instrument: str
    score: int
    severity: str | None


@dataclass(frozen=True)
class IntakeComplete:
    """Intake finished: match (``state.counselor`` is ``"auto"`` or a counselor id) or waitlist."""


IntakeEvent = (
    ConsentGiven | ConsentDeclined | AgeRefused | CrisisDetected | InstrumentScored | IntakeComplete
)


# ----------------------------------------------------------------------------------------- state


class InvalidState(ValueError):
    """A stored intake state that cannot be trusted (corrupt, or from an incompatible format)."""


Answers = tuple[tuple[int, ...] | None, ...]


@dataclass(frozen=True)
class IntakeState:
    """A client's progress through intake. Holds the pseudonym and answers: store it sealed.

    ``answers`` has one entry per instrument reached: a tuple of item answers (partial for the
    current one) or ``None`` if skipped. ``counselor_offer`` is the list the client was shown, so a
    number typed later means what the client saw. ``resume`` is the step to return to after a
    re-consent or a pause. ``zone`` is the client's time zone (an IANA id), when their country
    lists zones.
    """

    step: Stage = Stage.LANGUAGE
    language: str | None = None
    consent_version: str | None = None
    age_ok: bool = False
    country: str | None = None
    zone: str | None = None
    pseudonym: str | None = None
    instrument: int = 0
    item: int = 0
    answers: Answers = ()
    topic: str | None = None
    counselor: str | None = None
    counselor_offer: tuple[str, ...] = ()
    crisis: bool = False
    resume: Stage | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (only str, int, bool, None, lists, dicts)."""
        return {
            "format": STATE_FORMAT,
            "step": self.step.value,
            "language": self.language,
            "consent_version": self.consent_version,
            "age_ok": self.age_ok,
            "country": self.country,
            "zone": self.zone,
            "pseudonym": self.pseudonym,
            "instrument": self.instrument,
            "item": self.item,
            "answers": [None if a is None else list(a) for a in self.answers],
            "topic": self.topic,
            "counselor": self.counselor,
            "counselor_offer": list(self.counselor_offer),
            "crisis": self.crisis,
            "resume": None if self.resume is None else self.resume.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntakeState:
        """Rebuild a state from ``to_dict`` output; raise ``InvalidState`` if it does not add up."""
        try:
            if data.get("format") != STATE_FORMAT:
                raise InvalidState("unknown intake state format")
            state = cls(
                step=Stage(data["step"]),
                language=_opt_str(data["language"]),
                consent_version=_opt_str(data["consent_version"]),
                age_ok=_bool(data["age_ok"]),
                country=_opt_str(data["country"]),
                zone=_opt_str(data.get("zone")),  # states saved before zones were asked
                pseudonym=_opt_str(data["pseudonym"]),
                instrument=_int(data["instrument"]),
                item=_int(data["item"]),
                answers=tuple(
                    None if a is None else tuple(_int(v) for v in _list(a))
                    for a in _list(data["answers"])
                ),
                topic=_opt_str(data["topic"]),
                counselor=_opt_str(data["counselor"]),
                counselor_offer=tuple(_str(v) for v in _list(data["counselor_offer"])),
                crisis=_bool(data["crisis"]),
                resume=None if data["resume"] is None else Stage(data["resume"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidState):
                raise
            raise InvalidState("malformed intake state") from exc
        problems = state_problems(state)
        if problems:
            raise InvalidState("inconsistent intake state: " + "; ".join(problems))
        return state


def _opt_str(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise TypeError("expected a string or null")


def _str(v: object) -> str:
    if isinstance(v, str):
        return v
    raise TypeError("expected a string")


def _int(v: object) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise TypeError("expected an integer")


def _bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    raise TypeError("expected a boolean")


def _list(v: object) -> list[object]:
    if isinstance(v, list):
        return v
    raise TypeError("expected a list")


def state_problems(state: IntakeState, ctx: IntakeContext | None = None) -> list[str]:
    """Invariants a state must satisfy (empty list: valid).

    Without ``ctx`` only the shape is checked (used by ``from_dict``); with it, ids and indexes are
    also checked against the current policy. The texts are for logs: they never quote a value.
    """
    p: list[str] = []
    s = state
    if s.step in _TERMINAL:
        rest = replace(s, step=Stage.LANGUAGE, language=None)
        if rest != IntakeState():
            p.append("a finished intake keeps nothing but its language")
        return p
    if s.step is Stage.RECONSENT:
        if s.resume is None or s.resume not in _PROGRESS[2:]:
            p.append("re-consent without a step to resume")
            return p
        at = s.resume
    elif s.step is Stage.PAUSED:
        if s.resume is None or s.resume not in _PAUSABLE:
            p.append("pause without a step to resume")
            return p
        at = s.resume
    else:
        if s.resume is not None:
            p.append("resume set outside re-consent")
        at = s.step
    pos = _PROGRESS.index(at)

    def after(stage: Stage) -> bool:
        return pos > _PROGRESS.index(stage)

    if (s.language is not None) != after(Stage.LANGUAGE):
        p.append("language does not match the step")
    if (s.consent_version is not None) != after(Stage.CONSENT):
        p.append("consent does not match the step")
    if s.age_ok != after(Stage.AGE):
        p.append("age confirmation does not match the step")
    if s.country is not None and not after(Stage.COUNTRY):
        p.append("country set too early")
    if s.zone is not None and not after(Stage.ZONE):
        p.append("zone set too early")
    if (s.pseudonym is not None) != after(Stage.PSEUDONYM):
        p.append("pseudonym does not match the step")
    if s.pseudonym is not None and not 1 <= len(s.pseudonym) <= PSEUDONYM_MAX:
        p.append("pseudonym length out of range")
    if s.topic is not None and not after(Stage.TOPIC):
        p.append("topic set too early")
    if (s.counselor is not None) != (at is Stage.DONE):
        p.append("counselor choice does not match the step")
    if s.counselor_offer and not after(Stage.TOPIC):
        p.append("counselor offer too early")
    if any(a is not None and any(v < 0 for v in a) for a in s.answers):
        p.append("negative answer")
    if at is Stage.SCREENING:
        if s.instrument < 0 or len(s.answers) != s.instrument + 1:
            p.append("answers do not match the instrument index")
        else:
            current = s.answers[s.instrument]
            if current is None or len(current) != s.item:
                p.append("answers do not match the item index")
    else:
        if s.instrument != 0 or s.item != 0:
            p.append("screening position outside screening")
        if s.answers and not after(Stage.SCREENING):
            p.append("answers set too early")
    if ctx is not None and not p:
        p.extend(_context_problems(s, at, ctx))
    return p


def _context_problems(s: IntakeState, at: Stage, ctx: IntakeContext) -> list[str]:
    p: list[str] = []
    if s.language is not None and s.language not in ctx.languages:
        p.append("unknown language")
    if s.country is not None and s.country not in ctx.countries:
        p.append("unknown country")
    if s.zone is not None and s.zone not in ctx.zones.get(s.country or "", ()):
        p.append("zone not among the country's")
    if s.topic is not None and s.topic not in ctx.topics:
        p.append("unknown topic")
    if s.counselor is not None and s.counselor != "auto" and s.counselor not in s.counselor_offer:
        p.append("counselor not among those offered")
    for index, answers in enumerate(s.answers):
        if index >= len(ctx.instruments):
            p.append("more answer sets than instruments")
            break
        spec = ctx.instruments[index]
        if answers is None:
            continue
        if any(v > spec.max_answer for v in answers):
            p.append("answer above the scale")
        finished = at is not Stage.SCREENING or index < s.instrument
        if finished and len(answers) != spec.item_count:
            p.append("completed instrument with a wrong number of answers")
        if not finished and len(answers) >= spec.item_count:
            p.append("current item beyond the instrument")
    if after_screening(at) and len(s.answers) != len(ctx.instruments):
        p.append("screening finished without every instrument")
    return p


def after_screening(stage: Stage) -> bool:
    """Whether ``stage`` comes after the screening step."""
    return stage in _PROGRESS and _PROGRESS.index(stage) > _PROGRESS.index(Stage.SCREENING)


# ----------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    """What one message did: the new state, replies to send in order, events to act on."""

    state: IntakeState
    replies: tuple[Reply, ...] = ()
    events: tuple[IntakeEvent, ...] = ()


def start(ctx: IntakeContext) -> Step:
    """A fresh intake: the bilingual welcome with the language choice."""
    return Step(IntakeState(), (Reply("intake.welcome", {"languages": ctx.languages}),))


def needs_reconsent(state: IntakeState, current_version: str) -> bool:
    """Whether a client who consented to an older policy text must consent again before going on.

    A paused intake is asked once the client resumes it, not while they are in a crisis.
    """
    if state.step in _TERMINAL or state.step in (
        Stage.LANGUAGE,
        Stage.CONSENT,
        Stage.RECONSENT,
        Stage.PAUSED,
    ):
        return False
    return state.consent_version != current_version


def begin_reconsent(state: IntakeState, ctx: IntakeContext) -> Step:
    """Interrupt the current step to show the changed consent text; ``agree`` resumes it."""
    if not needs_reconsent(state, ctx.consent_version):
        return Step(state)
    new = replace(state, step=Stage.RECONSENT, resume=state.step)
    return Step(new, (Reply("intake.reconsent", {"version": ctx.consent_version}),))


def pause(state: IntakeState) -> Step:
    """Hold the questions after a crisis message mid-intake (the bridge gives the crisis reply).

    Before consent there is nothing to hold, and a paused intake stays as it is: both return the
    state unchanged and say nothing.
    """
    if state.step not in _PAUSABLE:
        return Step(state)
    return _paused(replace(state, crisis=True), ())


def _paused(
    state: IntakeState, before: Sequence[Reply], events: Sequence[IntakeEvent] = ()
) -> Step:
    held = replace(state, step=Stage.PAUSED, resume=state.step)
    return Step(held, (*before, Reply("intake.paused")), tuple(events))


def advance(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    """Consume one client message. Never raises: odd input gets a hint and changes nothing."""
    if state.step in _TERMINAL:
        return start(ctx)
    if state.step is Stage.DONE:
        return Step(state)
    if len(text) > ctx.max_chars:
        return Step(state, (Reply("intake.too_long", {"max_chars": ctx.max_chars}),))
    return _HANDLERS[state.step](state, text, ctx)


# -------------------------------------------------------------------------------------- handlers


def _is(answer: str, word: str, ctx: IntakeContext) -> bool:
    return answer in ctx.vocabulary.get(word, frozenset())


def _number(answer: str) -> int | None:
    return parse_number(answer)


def _pick(answer: str, options: Sequence[str]) -> str | None:
    """An option by its 1-based number or by its id (case-insensitive)."""
    n = _number(answer)
    if n is not None:
        return options[n - 1] if 1 <= n <= len(options) else None
    for option in options:
        if option.casefold() == answer:
            return option
    return None


def _options(key: str, options: tuple[str, ...]) -> Reply:
    return Reply(key, {"options": options, "count": len(options)})


def _enter(stage: Stage, state: IntakeState, ctx: IntakeContext) -> tuple[IntakeState, list[Reply]]:
    """Move to ``stage`` and ask its question, skipping steps the policy leaves empty."""
    state = replace(state, step=stage)
    if stage is Stage.LANGUAGE:
        return state, [Reply("intake.welcome", {"languages": ctx.languages})]
    if stage is Stage.CONSENT:
        return state, [Reply("intake.consent", {"version": ctx.consent_version})]
    if stage is Stage.AGE:
        return state, [Reply("intake.age", {"min_age": ctx.min_age})]
    if stage is Stage.COUNTRY:
        if not ctx.countries:
            return _enter(Stage.PSEUDONYM, state, ctx)
        return state, [_options("intake.country", ctx.countries)]
    if stage is Stage.ZONE:
        zones = ctx.zones.get(state.country or "", ())
        if len(zones) < 2:
            state = replace(state, zone=zones[0] if zones else None)
            return _enter(Stage.PSEUDONYM, state, ctx)
        return state, [_options("intake.zone", zones)]
    if stage is Stage.PSEUDONYM:
        return state, [Reply("intake.pseudonym", {"max_len": PSEUDONYM_MAX})]
    if stage is Stage.SCREENING:
        return _enter_instrument(replace(state, instrument=0, item=0, answers=()), ctx)
    if stage is Stage.TOPIC:
        if not ctx.topics:
            return _enter(Stage.COUNSELOR, state, ctx)
        return state, [_options("intake.topic", ctx.topics)]
    if stage is Stage.COUNSELOR:
        state = replace(state, counselor_offer=ctx.counselor_options)
        if not ctx.counselor_options:
            return state, [Reply("intake.counselor_none")]
        return state, [_options("intake.counselor", ctx.counselor_options)]
    return state, []


def _enter_instrument(state: IntakeState, ctx: IntakeContext) -> tuple[IntakeState, list[Reply]]:
    index = state.instrument
    if index >= len(ctx.instruments):
        return _enter(Stage.TOPIC, replace(state, instrument=0, item=0), ctx)
    spec = ctx.instruments[index]
    state = replace(state, step=Stage.SCREENING, item=0, answers=(*state.answers[:index], ()))
    intro = Reply(
        "intake.screening_intro",
        {
            "instrument": spec.id,
            "number": index + 1,
            "instruments": len(ctx.instruments),
            "count": spec.item_count,
            "max_answer": spec.max_answer,
        },
    )
    return state, [intro, _item_reply(spec, 0)]


def _item_reply(spec: InstrumentSpec, item: int) -> Reply:
    return Reply(
        "intake.screening_item",
        {
            "instrument": spec.id,
            "item": item,
            "index": item + 1,
            "count": spec.item_count,
            "max_answer": spec.max_answer,
        },
    )


def _ask_again(state: IntakeState, ctx: IntakeContext) -> tuple[IntakeState, list[Reply]]:
    """The question of the step the client is at (after a hint or a re-consent)."""
    if state.step is Stage.SCREENING:
        if state.instrument >= len(ctx.instruments):
            return _enter(Stage.TOPIC, replace(state, instrument=0, item=0), ctx)
        spec = ctx.instruments[state.instrument]
        if state.item >= spec.item_count:
            return _finish_instrument(state, ctx, [], [])[:2]
        return state, [_item_reply(spec, state.item)]
    if state.step is Stage.DONE:
        return state, []
    return _enter(state.step, state, ctx)


def _with_hint(hint: Reply, state: IntakeState, ctx: IntakeContext) -> Step:
    state2, question = _ask_again(state, ctx)
    return Step(state2, (hint, *question))


def _language(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    lang = _pick(fold_answer(text), ctx.languages)
    if lang is None:
        return Step(
            state,
            (
                Reply(
                    "intake.language_invalid",
                    {"languages": ctx.languages, "count": len(ctx.languages)},
                ),
            ),
        )
    new, replies = _enter(Stage.CONSENT, replace(state, language=lang), ctx)
    return Step(new, tuple(replies))


def _consent(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    answer = fold_answer(text)
    if _is(answer, "agree", ctx):
        new, replies = _enter(Stage.AGE, replace(state, consent_version=ctx.consent_version), ctx)
        return Step(new, tuple(replies), (ConsentGiven(ctx.consent_version),))
    if _is(answer, "decline", ctx):
        return _declined(state)
    return Step(state, (Reply("intake.consent_invalid"),))


def _declined(state: IntakeState) -> Step:
    new = IntakeState(step=Stage.DECLINED, language=state.language)
    return Step(new, (Reply("intake.consent_declined"),), (ConsentDeclined(),))


def _reconsent(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    answer = fold_answer(text)
    if _is(answer, "agree", ctx):
        resumed = state.resume if state.resume is not None else Stage.DONE
        new = replace(state, step=resumed, resume=None, consent_version=ctx.consent_version)
        new, replies = _ask_again(new, ctx)
        return Step(new, tuple(replies), (ConsentGiven(ctx.consent_version),))
    if _is(answer, "decline", ctx):
        return _declined(state)
    return Step(state, (Reply("intake.consent_invalid"),))


def _age(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    answer = fold_answer(text)
    if _is(answer, "yes", ctx):
        new, replies = _enter(Stage.COUNTRY, replace(state, age_ok=True), ctx)
        return Step(new, tuple(replies))
    if _is(answer, "no", ctx):
        new = IntakeState(step=Stage.AGE_REFUSED, language=state.language)
        return Step(new, (Reply("intake.age_refused", {"min_age": ctx.min_age}),), (AgeRefused(),))
    return _with_hint(Reply("intake.age_invalid", {"min_age": ctx.min_age}), state, ctx)


def _country(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    country = _pick(fold_answer(text), ctx.countries)
    if country is None:
        hint = Reply("intake.country_invalid", {"count": len(ctx.countries)})
        return _with_hint(hint, state, ctx)
    new, replies = _enter(Stage.ZONE, replace(state, country=country, zone=None), ctx)
    return Step(new, tuple(replies))


def _zone(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    zones = ctx.zones.get(state.country or "", ())
    zone = _pick(fold_answer(text), zones)
    if zone is None:
        if len(zones) < 2:  # the policy dropped the zones mid-intake
            new, replies = _enter(Stage.ZONE, state, ctx)
            return Step(new, tuple(replies))
        return _with_hint(Reply("intake.zone_invalid", {"count": len(zones)}), state, ctx)
    new, replies = _enter(Stage.PSEUDONYM, replace(state, zone=zone), ctx)
    return Step(new, tuple(replies))


def _on_pause(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    answer = fold_answer(text)
    if _is(answer, "now", ctx):
        resumed = replace(state, step=state.resume or Stage.DONE, resume=None)
        if resumed.step is Stage.SCREENING and resumed.item == 0:
            new, question = _enter_instrument(resumed, ctx)  # a new questionnaire: its intro
        else:
            new, question = _ask_again(resumed, ctx)
        return Step(new, tuple(question))
    if _is(answer, "later", ctx):
        return Step(state, (Reply("intake.pause_later"),))
    return Step(state, (Reply("intake.pause_waiting"),))


def _pseudonym(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    name = " ".join(clean_text(text, len(text) + 1).split())
    if not 1 <= len(name) <= PSEUDONYM_MAX:
        hint = Reply("intake.pseudonym_invalid", {"max_len": PSEUDONYM_MAX})
        return _with_hint(hint, state, ctx)
    new, replies = _enter(Stage.SCREENING, replace(state, pseudonym=name), ctx)
    return Step(new, tuple(replies))


def _screening(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    if state.instrument >= len(ctx.instruments):  # the policy lost an instrument mid-intake
        repaired, question = _ask_again(state, ctx)
        return Step(repaired, tuple(question))
    spec = ctx.instruments[state.instrument]
    answer = fold_answer(text)
    replies: list[Reply] = []
    events: list[IntakeEvent] = []
    if _is(answer, "skip", ctx):
        replies.append(Reply("intake.screening_skipped", {"instrument": spec.id}))
        answers = (*state.answers[: state.instrument], None)
        new = replace(state, answers=answers, instrument=state.instrument + 1, item=0)
        new, more = _enter_instrument(new, ctx)
        return Step(new, (*replies, *more))
    value = _number(answer)
    if value is None or value > spec.max_answer:
        hint = Reply(
            "intake.screening_invalid", {"instrument": spec.id, "max_answer": spec.max_answer}
        )
        return _with_hint(hint, state, ctx)
    current = state.answers[state.instrument] or ()
    done = (*current, value)
    threshold = spec.critical.get(len(current))
    new_state = replace(state, answers=(*state.answers[: state.instrument], done), item=len(done))
    disclosed = threshold is not None and value >= threshold
    if disclosed:
        events.append(CrisisDetected(f"screening:{spec.id}:item{len(done)}"))
        new_state = replace(new_state, crisis=True)
    if len(done) < spec.item_count:
        if disclosed:
            return _paused(new_state, (), events)
        return Step(new_state, (_item_reply(spec, len(done)),), tuple(events))
    new_state, replies, events = _finish_instrument(
        new_state, ctx, replies, events, ask=not disclosed
    )
    if disclosed:
        return _paused(new_state, replies, events)
    return Step(new_state, tuple(replies), tuple(events))


def _finish_instrument(
    state: IntakeState,
    ctx: IntakeContext,
    replies: list[Reply],
    events: list[IntakeEvent],
    *,
    ask: bool = True,
) -> tuple[IntakeState, list[Reply], list[IntakeEvent]]:
    """Score the current instrument and move on; ``ask=False`` moves without asking (a pause)."""
    spec = ctx.instruments[state.instrument]
    answers = state.answers[state.instrument] or ()
    answers = answers[: spec.item_count]
    total = screening.score(answers)
    band = screening.severity(total, spec.bands)
    replies.append(
        Reply(
            "intake.screening_result",
            {"instrument": spec.id, "score": total, "severity": band or ""},
        )
    )
    events.append(InstrumentScored(spec.id, total, band))
    state = replace(
        state,
        answers=(*state.answers[: state.instrument], answers),
        instrument=state.instrument + 1,
        item=0,
    )
    state, more = _enter_instrument(state, ctx)
    if ask:
        replies.extend(more)
    return state, replies, events


def _topic(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    topic = _pick(fold_answer(text), ctx.topics)
    if topic is None:
        return _with_hint(Reply("intake.topic_invalid", {"count": len(ctx.topics)}), state, ctx)
    new, replies = _enter(Stage.COUNSELOR, replace(state, topic=topic), ctx)
    return Step(new, tuple(replies))


def _counselor(state: IntakeState, text: str, ctx: IntakeContext) -> Step:
    answer = fold_answer(text)
    choice = "auto" if _is(answer, "auto", ctx) else _pick(answer, state.counselor_offer)
    if choice is None:
        hint = Reply("intake.counselor_invalid", {"count": len(ctx.counselor_options)})
        return _with_hint(hint, state, ctx)
    return Step(replace(state, step=Stage.DONE, counselor=choice), (), (IntakeComplete(),))


_HANDLERS = {
    Stage.LANGUAGE: _language,
    Stage.CONSENT: _consent,
    Stage.RECONSENT: _reconsent,
    Stage.AGE: _age,
    Stage.COUNTRY: _country,
    Stage.ZONE: _zone,
    Stage.PAUSED: _on_pause,
    Stage.PSEUDONYM: _pseudonym,
    Stage.SCREENING: _screening,
    Stage.TOPIC: _topic,
    Stage.COUNSELOR: _counselor,
}
