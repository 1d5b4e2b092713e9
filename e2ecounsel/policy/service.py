"""``service.toml``: the service rules (cadence, SLA, retention, matching, trust, ...)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import cast

from e2ecounsel.policy.model import (
    MISFIRE_MODES,
    TRUST_MODES,
    BookingPolicy,
    MatchingWeights,
    MisfireMode,
    MisfirePolicy,
    OnCallPolicy,
    RetentionPolicy,
    ServicePolicy,
    Specialty,
    Topic,
    TrustMode,
)
from e2ecounsel.policy.toml import COUNTRY_RE, ID_RE, LANG_RE, Run, Table, suggest

_OFFSET_RE = re.compile(r"^(\d{1,4})([mhd])$")
_SERVER_RE = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
_OFFSET_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def placeholder_service(languages: tuple[str, ...]) -> ServicePolicy:
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


SERVICE_SECTIONS = (
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


def load_service(run: Run) -> ServicePolicy:
    f = run.file("service.toml")
    data = f.parse(run.root / "service.toml")
    if data is None:
        # Keep checking the other files with the languages that are present.
        guessed = tuple(sorted(p.parent.name for p in run.root.glob("*/messages.toml"))) or ("en",)
        return placeholder_service(guessed)
    root = Table(f, data)
    root.check_keys(SERVICE_SECTIONS, [s for s in SERVICE_SECTIONS if s != "access"])

    svc = root.table("service")
    svc.check_keys(("name", "languages", "default_language", "min_age"))
    name = svc.text("name")
    languages = svc.texts("languages")
    for i, lang in enumerate(languages):
        if not LANG_RE.match(lang):
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
            f"{default_language!r} is not in languages" + suggest(default_language, languages),
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
    ret.check_keys(("default_days", "countries", "operational_days"))
    default_days = ret.integer("default_days", 1, 36500)
    operational_days = ret.integer("operational_days", 1, 365, 14)
    by_country: dict[str, int] = {}
    countries = ret.table("countries", required=False)
    for code in countries.data:
        if not COUNTRY_RE.match(code):
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
        run.notes.append(
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
        if not ID_RE.match(inst):
            scr.error(f"instruments[{i}]", f"{inst!r} is not an id like 'phq9'")

    topics = tuple(
        Topic(t.text("id"), t.per_language("label", languages))
        for t in _entries(run, root, "topics", ("id", "label"))
    )
    specialties = tuple(
        Specialty(s.text("id"), s.per_language("label", languages))
        for s in _entries(run, root, "specialties", ("id", "label"))
    )
    _unique_ids(root, "topics", [t.id for t in topics])
    _unique_ids(root, "specialties", [s.id for s in specialties])
    if not topics:
        root.error("topics", "must list at least one topic")
    specialty_ids = {s.id for s in specialties}
    for topic in topics:
        if topic.id != "other" and topic.id not in specialty_ids:
            run.notes.append(
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
        retention=RetentionPolicy(default_days, MappingProxyType(by_country), operational_days),
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


def _entries(run: Run, parent: Table, name: str, keys: Sequence[str]) -> list[Table]:
    entries = parent.tables(name)
    for entry in entries:
        entry.check_keys(keys, keys)
        ident = entry.data.get("id")
        if isinstance(ident, str) and not ID_RE.match(ident):
            entry.error("id", f"{ident!r} must be lowercase letters, digits, '-' or '_'")
    return entries


def _unique_ids(parent: Table, name: str, ids: list[str]) -> None:
    for ident in {i for i in ids if ids.count(i) > 1}:
        parent.error(name, f"id {ident!r} is used twice")
