"""Load a whole policy folder in one validation run, and ``policy check``."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from e2ecounsel.errors import PolicyError
from e2ecounsel.policy.crisis import (
    CRISIS_CORPUS,
    MIN_CORPUS_RECALL,
    crisis_corpus_report,
    load_crisis,
)
from e2ecounsel.policy.instruments import load_instruments
from e2ecounsel.policy.model import (
    FALLBACK_COUNTRY,
    CrisisPolicy,
    Policy,
    PolicyInvalid,
    ServicePolicy,
)
from e2ecounsel.policy.service import load_service
from e2ecounsel.policy.texts import load_consent, load_messages
from e2ecounsel.policy.toml import Run, suggest
from e2ecounsel.policy.vocabulary import load_vocabularies


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
    run = Run(root)
    service = load_service(run)
    languages = service.languages
    messages = load_messages(run, languages, service.default_language)
    vocabularies = load_vocabularies(run, languages, service.default_language)
    consent = load_consent(run, service)
    instruments = load_instruments(run, service.screening, languages)
    crisis = load_crisis(run, languages)
    _cross_check(run, service, crisis)
    if run.problems:
        raise PolicyInvalid(run.problems, run.root)
    return Policy(
        root=run.root,
        service=service,
        languages=languages,
        consent=MappingProxyType(consent),
        instruments=MappingProxyType(instruments),
        crisis=crisis,
        messages=MappingProxyType(
            {lang: MappingProxyType(texts) for lang, texts in messages.items()}
        ),
        vocabularies=MappingProxyType(vocabularies),
        notes=tuple(run.notes),
        strict=strict,
    )


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


def _cross_check(run: Run, service: ServicePolicy, crisis: CrisisPolicy) -> None:
    codes = [c.code for c in crisis.countries if c.code != FALLBACK_COUNTRY]
    if not codes:
        return
    for code in service.retention.by_country:
        if code not in codes:
            run.file("service.toml").error(
                f"retention.countries.{code}",
                "is not a country in crisis.toml" + suggest(code, codes),
            )
