"""A small statistical second opinion for crisis triage: a naive Bayes model over the folded
words of a message that may turn the rules' ``none`` into a ``check``, never into the protocol.

Why: the rules (``crisis.py``) catch what their patterns name; people also write indirectly
("nobody will miss me", "tidur terus gak bangun bangun"). A model trained on the labelled lines
of ``policies/crisis/`` picks up the words and word pieces such lines share. A wrong "yes" of
the model costs one direct question, never a page.

How it works:

1. **Features** of a message: its folded, squeezed words (``crisis.words``) as ``w:word``,
   neighbouring word pairs as ``b:one+two``, letter 3- to 5-grams inside each word (with ``<``
   and ``>`` marking the word's ends) as ``c:<mat``. Each counts once per message.
2. **Training** counts, per class (at risk / not), how many messages have each feature:
   multinomial naive Bayes over those presences with additive smoothing ``ALPHA``. No
   iterations, no randomness: the weights depend only on the lines, in sorted feature order.
3. **Score** of a message: the prior log-odds plus, for every feature seen in training, its
   weight ``log P(f | at risk) - log P(f | not)``, divided by the square root of the number of
   known features (a long message does not win by length alone).
4. **Decision**: a score above ``threshold`` is a check, for a message of ``MIN_WORDS`` words
   or more (the training lines have no short everyday messages, so the model has no ground to
   judge "no" or "queue ready"; short disclosures are the rules' part). The threshold is
   chosen on the training lines by k-fold cross-validation (folds by line order, no
   shuffling): the lowest one at which the model flags at most ``max_false_check`` of the
   held-out not-at-risk lines.
5. **Explanation**: the decision's reason names the language whose training words the message
   shares most (``model:en``), its evidence the three features that pushed the score up most
   (``w:pills``, ``b:no+point``, ``c:<wak``). The evidence is made of pieces of the message:
   it is shown to operators testing the triage, and kept out of logs and audit rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from e2ecounsel.domain.crisis import words

#: Additive smoothing of the feature counts.
ALPHA = 0.5
#: Letter n-gram lengths inside a word.
NGRAM_SIZES = (3, 4, 5)
#: Folds of the cross-validation that picks the threshold.
FOLDS = 5
#: The share of not-at-risk training lines the model may flag in cross-validation: 15 %, a
#: question too many in one of seven ordinary messages that look like a crisis. Judged on
#: folds it was not chosen on (nested cross-validation over the tuning lines), a threshold
#: chosen this way flagged 14.6 % (en, 12/82) and 13.6 % (id, 11/81) of the not-at-risk lines
#: (with 12 %: 9.8 % and 12.3 %, and fewer at-risk lines caught).
MAX_FALSE_CHECK = 0.15
#: The fewest words a message needs for the model to give an opinion on it.
MIN_WORDS = 3
#: How many features the evidence of a check names.
TOP_FEATURES = 3


def features(text: str) -> list[str]:
    """The sorted, distinct feature names of ``text``."""
    found: set[str] = set()
    ws = words(text)
    for i, word in enumerate(ws):
        found.add(f"w:{word}")
        if i:
            found.add(f"b:{ws[i - 1]}+{word}")
        marked = f"<{word}>"
        for n in NGRAM_SIZES:
            for start in range(len(marked) - n + 1):
                found.add(f"c:{marked[start : start + n]}")
    return sorted(found)


@dataclass(frozen=True)
class Example:
    """A training line: its language, its text, whether its writer may be at risk."""

    lang: str
    text: str
    positive: bool


@dataclass(frozen=True)
class Scored:
    """A message's score and the features that raised it most (strongest first)."""

    score: float
    top: tuple[str, ...]


@dataclass(frozen=True)
class CrisisModel:
    """Trained weights (sorted by feature), the prior log-odds, the decision threshold and each
    language's training words (to name the language in a reason)."""

    weights: tuple[tuple[str, float], ...]
    prior: float
    threshold: float
    vocabulary: tuple[tuple[str, frozenset[str]], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", dict(self.weights))

    def score(self, text: str) -> Scored:
        """The score of ``text`` and the features that raised it most."""
        index: dict[str, float] = self._index  # type: ignore[attr-defined]
        return _score(index, self.prior, features(text))

    def opinion(self, text: str) -> tuple[str, tuple[str, ...]] | None:
        """``(language, strongest features)`` when the model asks for a check on ``text``,
        else ``None``."""
        if len(words(text)) < MIN_WORDS:
            return None
        scored = self.score(text)
        if scored.score <= self.threshold:
            return None
        return self.language(text), scored.top

    def language(self, text: str) -> str:
        """The language whose training words ``text`` shares most (the first one on a tie)."""
        ws = set(words(text))
        return max(self.vocabulary, key=lambda pair: len(ws & pair[1]))[0]


def _weights(
    rows: Sequence[tuple[Sequence[str], bool]],
) -> tuple[tuple[tuple[str, float], ...], float]:
    """Naive Bayes log-odds per feature and the prior log-odds, from ``(features, positive)``."""
    counts: dict[str, list[int]] = {}
    totals = [0, 0]
    docs = [0, 0]
    for feats, positive in rows:
        cls = int(positive)
        docs[cls] += 1
        totals[cls] += len(feats)
        for f in feats:
            counts.setdefault(f, [0, 0])[cls] += 1
    size = len(counts)
    neg_norm = math.log(totals[0] + ALPHA * size)
    pos_norm = math.log(totals[1] + ALPHA * size)
    weights = tuple(
        (f, (math.log(c[1] + ALPHA) - pos_norm) - (math.log(c[0] + ALPHA) - neg_norm))
        for f, c in sorted(counts.items())
    )
    prior = math.log((docs[1] + 1) / (docs[0] + 1))
    return weights, prior


def _score(index: dict[str, float], prior: float, feats: Iterable[str]) -> Scored:
    known = [(index[f], f) for f in feats if f in index]
    if not known:
        return Scored(prior, ())
    total = prior + sum(w for w, _ in known) / math.sqrt(len(known))
    strongest = sorted(known, key=lambda pair: (-pair[0], pair[1]))[:TOP_FEATURES]
    return Scored(total, tuple(f for w, f in strongest if w > 0))


def _vocabulary(examples: Iterable[Example]) -> tuple[tuple[str, frozenset[str]], ...]:
    by_lang: dict[str, set[str]] = {}
    for ex in examples:
        by_lang.setdefault(ex.lang, set()).update(words(ex.text))
    return tuple((lang, frozenset(ws)) for lang, ws in sorted(by_lang.items()))


def cross_validated_threshold(
    examples: Sequence[Example], folds: int = FOLDS, max_false_check: float = MAX_FALSE_CHECK
) -> float:
    """The lowest threshold at which models trained on ``folds - 1`` parts flag at most
    ``max_false_check`` of the negative lines of the part left out (line ``i`` is in part
    ``i % folds``; lines too short for an opinion do not count)."""
    rows = [(features(ex.text), ex.positive) for ex in examples]
    long_enough = [len(words(ex.text)) >= MIN_WORDS for ex in examples]
    negatives: list[float] = []
    for k in range(folds):
        weights, prior = _weights([row for i, row in enumerate(rows) if i % folds != k])
        index = dict(weights)
        negatives.extend(
            _score(index, prior, feats).score
            for i, (feats, positive) in enumerate(rows)
            if i % folds == k and not positive and long_enough[i]
        )
    if not negatives:
        return 0.0
    ranked = sorted(negatives, reverse=True)
    allowed = math.floor(max_false_check * len(ranked))
    # A score flags only when above the threshold: the (allowed + 1)-th highest one.
    return ranked[min(allowed, len(ranked) - 1)]


def train(examples: Sequence[Example], threshold: float | None = None) -> CrisisModel:
    """A model from labelled lines; the threshold from cross-validation unless given."""
    weights, prior = _weights([(features(ex.text), ex.positive) for ex in examples])
    if threshold is None:
        threshold = cross_validated_threshold(examples)
    return CrisisModel(weights, prior, threshold, _vocabulary(examples))


@lru_cache(maxsize=4)
def trained(examples: tuple[Example, ...]) -> CrisisModel:
    """:func:`train` once per distinct set of lines (every policy load asks again)."""
    return train(examples)
