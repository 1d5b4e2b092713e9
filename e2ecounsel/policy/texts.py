"""Bot messages (``<lang>/messages.toml``) and consent texts (``<lang>/consent.md``).

The catalog below is the contract between the code and the texts: every key the code renders,
with the parameters its caller passes. Each language must have every key, use only those
parameters, and use the same ones as the default language.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import cast

from e2ecounsel.policy.model import ConsentText, ServicePolicy
from e2ecounsel.policy.toml import File, Run, fmt, suggest, type_name

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
    "help.line": ("command", "help"),
    "help.client": ("commands",),
    "help.counselor": ("commands",),
    "help.supervisor": ("commands",),
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


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_messages(run: Run, languages: Sequence[str], default: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    used: dict[str, dict[str, set[str]]] = {}
    files: dict[str, File] = {}
    for lang in languages:
        f = files[lang] = run.file(f"{lang}/messages.toml")
        data = f.parse(run.root / lang / "messages.toml")
        texts: dict[str, str] = {}
        if data is not None:
            _flatten(f, data, "", texts)
            for key in MESSAGE_PARAMS:
                if key not in texts:
                    parent = key.rpartition(".")[0]
                    f.error(key, "is missing (every language needs every text)", at=parent)
        out[lang] = texts
        used[lang] = {k: _check_template(f, k, t) for k, t in texts.items()}
    for lang in languages:
        if lang == default or default not in used:
            continue
        f = files[lang]
        for key, params in used[lang].items():
            ref = used[default].get(key)
            if ref is not None and params != ref:
                f.error(
                    key,
                    f"uses {fmt(params)} but {default}/messages.toml uses {fmt(ref)}; "
                    "every language must use the same parameters",
                )
    for extra in sorted(p.parent.name for p in run.root.glob("*/messages.toml")):
        if extra not in languages:
            run.notes.append(
                f"{extra}/messages.toml: {extra!r} is not in service.toml languages; ignored"
            )
    return out


def _flatten(f: File, data: Mapping[str, object], prefix: str, out: dict[str, str]) -> None:
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            _flatten(f, cast(dict[str, object], value), key + ".", out)
        elif key not in MESSAGE_PARAMS:
            f.error(key, "unknown message key" + suggest(key, MESSAGE_PARAMS))
        elif not isinstance(value, str):
            f.error(key, f"must be text, not {type_name(value)}")
        elif not value.strip():
            f.error(key, "must not be empty")
        else:
            out[key] = value


def _check_template(f: File, key: str, template: str) -> set[str]:
    try:
        params = template_params(template)
    except ValueError as exc:
        f.error(key, f"{exc} (write {{{{ and }}}} for literal braces)")
        return set()
    allowed = set(MESSAGE_PARAMS[key])
    allowed |= {"service_name"} if key in STATE_MESSAGES else COMMON_PARAMS
    for name in sorted(params - allowed):
        hint = suggest(name, allowed)
        if key in STATE_MESSAGES:
            why = "room names are not encrypted, so they take no personal parameters"
        else:
            why = "available: " + (fmt(allowed) or "none")
        f.error(key, f"unknown parameter {{{name}}}{hint}; {why}")
    missing = _REQUIRED_PARAMS.get(key, frozenset()) - params
    if missing:
        f.error(key, f"must show {fmt(missing)}")
    return params


# ---------------------------------------------------------------- consent


def load_consent(run: Run, service: ServicePolicy) -> dict[str, ConsentText]:
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
        f = run.file(rel)
        try:
            raw = (run.root / lang / "consent.md").read_text(encoding="utf-8")
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
            f.error("", f"unknown placeholder {fmt(unknown)}; available: {fmt(CONSENT_PARAMS)}")
            continue
        text = raw.format_map({**values, "cadence": service.cadence.get(lang, "")})
        out[lang] = ConsentText(text=text, version=text_hash(text))
    return out
