"""``crisis.toml`` (phrases, reply, resources per country) and ``crisis/<lang>.toml`` (triage
rules), with the labelled corpus files the rules are judged on."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from e2ecounsel.domain import crisis as triage
from e2ecounsel.domain import crisis_corpus, crisis_model
from e2ecounsel.domain.cadence import zone as cadence_zone
from e2ecounsel.policy.model import (
    FALLBACK_COUNTRY,
    Country,
    CrisisPolicy,
    Policy,
    Resource,
    Zone,
)
from e2ecounsel.policy.texts import template_params
from e2ecounsel.policy.toml import COUNTRY_RE, Run, Table, fmt

#: Placeholders the crisis reply may use.
CRISIS_REPLY_PARAMS: frozenset[str] = frozenset({"resources", "country", "service_name"})

#: ``policy check`` fails when the crisis rules catch fewer of the tuning corpus's at-risk
#: lines than this, in any language.
MIN_CORPUS_RECALL = 0.95
#: The labelled messages shipped in ``crisis/``: the part the rules are tuned on (and the
#: statistical model is trained on), and the held-out part they are judged on.
CRISIS_CORPUS = "crisis/corpus.tsv"
CRISIS_TUNING = (CRISIS_CORPUS, "crisis/heldout.tsv")
CRISIS_HELDOUT = "crisis/heldout2.tsv"


def load_crisis(run: Run, languages: Sequence[str]) -> CrisisPolicy:
    f = run.file("crisis.toml")
    data = f.parse(run.root / "crisis.toml")
    empty = CrisisPolicy({}, {}, (Country(FALLBACK_COUNTRY, {}, ()),))
    if data is None:
        return empty
    root = Table(f, data)
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
                run.notes.append(
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
                f"unknown placeholder {fmt(params - CRISIS_REPLY_PARAMS)}; "
                f"available: {fmt(CRISIS_REPLY_PARAMS)}",
            )
        if "resources" not in params:
            root.error(f"reply.{lang}", "must show {resources}")
        if ref is not None and params != ref:
            root.error(f"reply.{lang}", "must use the same placeholders in every language")
        ref = params if ref is None else ref

    countries: list[Country] = []
    for entry in root.tables("countries"):
        entry.check_keys(("code", "label", "resources", "zones"), ("code", "label", "resources"))
        code = entry.text("code")
        if code and code != FALLBACK_COUNTRY and not COUNTRY_RE.match(code):
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
        rules=MappingProxyType(load_triage(run, languages)),
        model=load_crisis_model(run),
        last_checked=last_checked if isinstance(last_checked, date) else None,
        check_window=timedelta(minutes=check_minutes),
        repeat_window=timedelta(minutes=repeat_minutes),
    )


def load_crisis_model(run: Run) -> crisis_model.CrisisModel | None:
    """The model trained on the tuning files that are there and readable (``None`` when
    none is: the rules judge alone)."""
    samples: list[crisis_corpus.Sample] = []
    for rel in CRISIS_TUNING:
        path = run.root / rel
        if not path.is_file():
            continue
        try:
            samples.extend(crisis_corpus.parse_corpus(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, crisis_corpus.CorpusError) as exc:
            run.notes.append(f"{rel} is not used to train the crisis model: {exc}")
    if not any(s.label for s in samples):
        return None
    return crisis_model.trained(crisis_corpus.training_examples(samples))


def load_triage(run: Run, languages: Sequence[str]) -> dict[str, triage.LanguageRules]:
    """``crisis/<lang>.toml`` for every language that has one (a folder without them
    keeps only the word-for-word phrases of ``crisis.toml``)."""
    found: dict[str, triage.LanguageRules] = {}
    for lang in languages:
        path = run.root / "crisis" / f"{lang}.toml"
        if not path.is_file():
            run.notes.append(
                f"crisis/{lang}.toml is missing: only the phrases in crisis.toml are matched"
            )
            continue
        rules = _load_triage_file(run, lang, path)
        if rules is not None:
            found[lang] = rules
    return found


def _load_triage_file(run: Run, lang: str, path: Path) -> triage.LanguageRules | None:
    f = run.file(f"crisis/{lang}.toml")
    data = f.parse(path)
    if data is None:
        return None
    root = Table(f, data)
    root.check_keys(("idioms", "words", "context", "rules"), ("rules",))
    words = root.table("words", required=False)
    classes: dict[str, tuple[str, ...]] = {}
    for name in words.data:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            words.error(name, "a word class name is lower-case letters, digits and _")
        classes[name] = _single_words(words, name)
    context = root.table("context", required=False)
    context.check_keys(triage.CONTEXT_KEYS)
    ctx = {key: _single_words(context, key) for key in triage.CONTEXT_KEYS}
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
    if run.problems:
        return None
    try:
        return triage.build_rules(lang, classes, ctx, specs, root.texts("idioms", ()))
    except ValueError as exc:
        root.error("", str(exc))
        return None


def _single_words(table: Table, name: str) -> tuple[str, ...]:
    found = table.texts(name, ())
    for i, word in enumerate(found):
        if len(triage.words(word)) != 1:
            table.error(f"{name}[{i}]", f"{word!r} must be one word")
    return tuple(w for w in found if len(triage.words(w)) == 1)


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
