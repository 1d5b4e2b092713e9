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
    <lang>/commands.toml       the words people type: commands and answers, one per language

Modules, one job each: :mod:`.model` (the frozen result), :mod:`.toml` (the validation
toolkit), :mod:`.service`, :mod:`.texts`, :mod:`.instruments`, :mod:`.crisis`,
:mod:`.vocabulary` (one file kind each) and :mod:`.loader` (one run over the folder).
Nothing here does I/O beyond reading that folder.
"""

from e2ecounsel.policy.crisis import (
    CRISIS_CORPUS,
    CRISIS_HELDOUT,
    CRISIS_REPLY_PARAMS,
    CRISIS_TUNING,
    MIN_CORPUS_RECALL,
    crisis_corpus_report,
)
from e2ecounsel.policy.loader import check_policy, default_policy_dir, load_policy
from e2ecounsel.policy.model import (
    ANSWER_GROUPS,
    ANSWERS,
    AUDIENCES,
    FALLBACK_COUNTRY,
    MISFIRE_MODES,
    STRICT_TEXTS_ENV,
    TRUST_MODES,
    Audience,
    Band,
    BookingPolicy,
    Command,
    ConsentText,
    Country,
    CrisisPolicy,
    Instrument,
    Item,
    MatchingWeights,
    Meaning,
    MisfireMode,
    MisfirePolicy,
    OnCallPolicy,
    Policy,
    PolicyInvalid,
    Resource,
    RetentionPolicy,
    ServicePolicy,
    Specialty,
    Topic,
    TrustMode,
    Vocabulary,
    Zone,
)
from e2ecounsel.policy.texts import (
    COMMON_PARAMS,
    CONSENT_PARAMS,
    MESSAGE_PARAMS,
    STATE_MESSAGES,
    template_params,
)

__all__ = [
    "ANSWERS",
    "ANSWER_GROUPS",
    "AUDIENCES",
    "Audience",
    "Command",
    "Meaning",
    "Vocabulary",
    "COMMON_PARAMS",
    "CONSENT_PARAMS",
    "CRISIS_CORPUS",
    "CRISIS_HELDOUT",
    "CRISIS_REPLY_PARAMS",
    "CRISIS_TUNING",
    "FALLBACK_COUNTRY",
    "MESSAGE_PARAMS",
    "MIN_CORPUS_RECALL",
    "MISFIRE_MODES",
    "STATE_MESSAGES",
    "STRICT_TEXTS_ENV",
    "TRUST_MODES",
    "Band",
    "BookingPolicy",
    "ConsentText",
    "Country",
    "CrisisPolicy",
    "Instrument",
    "Item",
    "MatchingWeights",
    "MisfireMode",
    "MisfirePolicy",
    "OnCallPolicy",
    "Policy",
    "PolicyInvalid",
    "Resource",
    "RetentionPolicy",
    "ServicePolicy",
    "Specialty",
    "Topic",
    "TrustMode",
    "Zone",
    "check_policy",
    "crisis_corpus_report",
    "default_policy_dir",
    "load_policy",
    "template_params",
]
