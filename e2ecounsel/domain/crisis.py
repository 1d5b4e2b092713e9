"""Crisis triage: does a message call for the full crisis protocol, a direct check question, or
nothing?

Two outcomes beside ``none``, as in crisis-line practice: **protocol** (clear risk: the crisis
reply at once, pages, risk high) and **check** (possible risk: ask one direct question). A wrong
"no" costs far more than a wrong "yes", so every doubt rounds towards ``check``.

The rules are data (``policies/crisis/<lang>.toml``, parsed into :class:`LanguageRules`), kept
transparent on purpose: an operator can read why a message was flagged (the rule id, never the
text) and extend the rules for what their clients write. How a message is read:

1. **Folding.** NFKC (full width), accents and invisible characters removed, case folded;
   ``n't`` becomes ``not``; leetspeak digits inside a word become letters (``m4t1`` -> ``mati``),
   a trailing ``2`` (Indonesian reduplication, ``barang2``) is dropped and a lone ``2`` is
   ``to``; repeated letters are squeezed (``matiii`` and ``mati`` are the same word, on both
   sides of the comparison).
2. **Words run together** (``bunuhdiri``, ``wanttodie``) are split into known words when the
   whole token is made of them (one of four letters or more); **typos** in words of six letters
   or more match at edit distance one (insertion, deletion, substitution or swap).
3. **Idioms** ("mati lampu", "dying of laughter") are masked: their words match no rule.
4. **Rules** are word patterns with optional gaps: ``@want ~3 @die`` is a word of the class
   ``want``, then up to three other words, then a word of the class ``die``. Terms are words,
   ``a|b`` alternatives, ``@class`` references or ``prefix*``.
5. **Context**, per sentence: a negation just before or inside a protocol match ("I'm *not*
   suicidal") lowers it to check, never to none; a third party as the subject ("my friend
   said *she* wants to die", with no first person after them) lowers it to check; a topic
   handled on purpose (a thesis, the news, a film) turns a bare mention (a check rule) into
   none.

Everything here is pure and deterministic: the same rules and text give the same answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

# Letters and digits; underscores and everything else separate words.
_WORD = re.compile(r"[^\W_]+")
# Invisible characters that separate words (zero width space); other format characters are dropped.
_SEPARATING_FORMAT = frozenset("\u200b")
# Sentence ends: context (who speaks, negation, topic) does not cross them.
_SENTENCE = re.compile(r"[.!?;\n]+")
_CANNOT = re.compile(r"\bcan['\u2019]?t\b|\bcannot\b")
_WONT = re.compile(r"\bwon['\u2019]t\b")
_NOT = re.compile(r"n['\u2019]t\b")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b"})
_SYMBOLS = str.maketrans({"@": "a", "$": "s"})
_REPEATS = re.compile(r"(.)\1+")
_GAP = re.compile(r"~(\d+)")

#: Longest gap a pattern may ask for between two of its words.
MAX_GAP = 8
#: Words this long (after squeezing) or longer match a text word one edit away.
FUZZY_MIN = 6
#: How many words before a match a negation or a third party is looked for.
LOOKBACK_NEGATION = 3
LOOKBACK_SUBJECT = 6


class Outcome(StrEnum):
    """What a message calls for, from least to most."""

    NONE = "none"
    CHECK = "check"
    PROTOCOL = "protocol"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Outcome.NONE: 0, Outcome.CHECK: 1, Outcome.PROTOCOL: 2}


@dataclass(frozen=True)
class Triage:
    """The decision for one message. ``reason`` is a rule id plus the context that changed it
    (``"id.want-die+negated"``): content-free, safe to log and audit."""

    outcome: Outcome
    reason: str | None = None
    lang: str | None = None


NO_RISK = Triage(Outcome.NONE)


# ------------------------------------------------------------------------------------ folding


def fold(text: str) -> str:
    """Case-, width- and accent-insensitive form of ``text`` used for matching."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    kept: list[str] = []
    for ch in decomposed:
        cat = unicodedata.category(ch)
        if cat == "Cc" or ch in _SEPARATING_FORMAT:
            kept.append(" ")
        elif cat not in ("Mn", "Me", "Cf"):  # accents; soft hyphens, joiners inside a word
            kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept)).casefold()


def squeeze(word: str) -> str:
    """``matiii`` -> ``mati``, ``kill`` -> ``kil``: both sides of a comparison are squeezed."""
    return _REPEATS.sub(r"\1", word)


def _raw_word(token: str) -> str:
    """A token with leetspeak digits read as letters (not yet squeezed)."""
    if token.isdigit():
        return "to" if token == "2" else token
    if not any(ch.isdigit() for ch in token):
        return token
    if token.endswith("2") and not token[:-1].isdigit():
        token = token.rstrip("2")  # "hati2", "barang2": a doubled word
    return token.translate(_LEET)


def words(text: str) -> list[str]:
    """The folded, squeezed words of ``text`` (no splitting of run-together words)."""
    return [squeeze(_raw_word(t)) for t in _raw_tokens(text)]


def _raw_tokens(text: str) -> list[str]:
    s = fold(text).translate(_SYMBOLS)
    s = _CANNOT.sub(" cannot ", s)
    s = _WONT.sub(" will not ", s)
    s = _NOT.sub(" not", s)
    return _WORD.findall(s)


def _distance_at_most_one(a: str, b: str) -> bool:
    """Damerau edit distance between ``a`` and ``b`` is at most one."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        i = diff[0]
        return len(diff) == 2 and diff[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


# ------------------------------------------------------------------------------------ patterns


@dataclass(frozen=True)
class Term:
    """One position of a pattern: any of ``words``, or a word starting with one of ``prefixes``."""

    words: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def matches(self, forms: frozenset[str]) -> bool:
        if not forms:
            return False
        if not self.words.isdisjoint(forms):
            return True
        return any(f.startswith(p) for f in forms for p in self.prefixes)


@dataclass(frozen=True)
class Pattern:
    """Terms in order; ``gaps[i]`` is how many other words may come before term ``i + 1``."""

    terms: tuple[Term, ...]
    gaps: tuple[int, ...]

    def literal_words(self) -> Iterator[str]:
        for term in self.terms:
            yield from term.words


def parse_pattern(source: str, classes: Mapping[str, Iterable[str]]) -> Pattern:
    """Parse ``"@want ~3 die|dead"``; ``ValueError`` with a readable message when malformed."""
    terms: list[Term] = []
    gaps: list[int] = []
    gap = 0
    for piece in source.split():
        gap_match = _GAP.fullmatch(piece)
        if gap_match:
            if not terms:
                raise ValueError(f"{piece!r} cannot start a pattern")
            gap = int(gap_match.group(1))
            if gap > MAX_GAP:
                raise ValueError(f"gap {piece!r} is larger than ~{MAX_GAP}")
            continue
        found: set[str] = set()
        prefixes: list[str] = []
        for alt in piece.split("|"):
            if alt.startswith("@"):
                name = alt[1:]
                if name not in classes:
                    raise ValueError(f"unknown word class {alt!r}")
                found.update(_fold_word(w) for w in classes[name])
            elif alt.endswith("*") and len(alt) > 1:
                prefix = _fold_word(alt[:-1])
                if len(prefix) < 3:
                    raise ValueError(f"prefix {alt!r} is too short (3 letters at least)")
                prefixes.append(prefix)
            else:
                word = _fold_word(alt)
                if not word:
                    raise ValueError(f"{piece!r} is not a word")
                found.add(word)
        found.discard("")
        if terms:
            gaps.append(gap)
        gap = 0
        terms.append(Term(frozenset(found), tuple(prefixes)))
    if not terms:
        raise ValueError("pattern is empty")
    return Pattern(tuple(terms), tuple(gaps))


def _fold_word(word: str) -> str:
    tokens = words(word)
    if len(tokens) != 1:
        raise ValueError(f"{word!r} must be one word (use a gap between words)")
    return tokens[0]


def _phrase_pattern(phrase: str) -> Pattern | None:
    tokens = words(phrase)
    if not tokens:
        return None
    return Pattern(tuple(Term(frozenset({t})) for t in tokens), (0,) * (len(tokens) - 1))


# --------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A pattern and what it calls for (``protocol`` or ``check``)."""

    id: str
    pattern: Pattern
    outcome: Outcome


@dataclass(frozen=True)
class LanguageRules:
    """One language's rules and context words, as loaded from ``policies/crisis/<lang>.toml``.

    ``third_party`` words name someone else (she, my friend, dia); ``first_person`` words bring
    the writer back into the sentence; ``topic`` words mark a subject handled on purpose.
    """

    rules: tuple[Rule, ...] = ()
    idioms: tuple[Pattern, ...] = ()
    negation: frozenset[str] = frozenset()
    first_person: frozenset[str] = frozenset()
    third_party: frozenset[str] = frozenset()
    topic: frozenset[str] = frozenset()
    vocabulary: frozenset[str] = field(default=frozenset())


CONTEXT_KEYS = ("negation", "first_person", "third_party", "topic", "filler")


def build_rules(
    lang: str,
    classes: Mapping[str, Sequence[str]],
    context: Mapping[str, Sequence[str]],
    rules: Sequence[tuple[str, str, str]],
    idioms: Sequence[str] = (),
) -> LanguageRules:
    """Compile one language from plain data; ``ValueError`` names the rule that is wrong.

    ``rules`` are ``(id, pattern, outcome)``; ids become ``<lang>.<id>``. ``context["filler"]``
    lists particles ("aja", "deh") that only help split words written together.
    """
    compiled: list[Rule] = []
    vocab: set[str] = set()
    for word_list in classes.values():
        vocab.update(_fold_word(w) for w in word_list)
    for rule_id, source, outcome in rules:
        try:
            kind = Outcome(outcome)
            if kind is Outcome.NONE:
                raise ValueError("outcome must be 'protocol' or 'check'")
            pattern = parse_pattern(source, classes)
        except ValueError as exc:
            raise ValueError(f"rule {rule_id!r}: {exc}") from None
        vocab.update(pattern.literal_words())
        compiled.append(Rule(f"{lang}.{rule_id}", pattern, kind))
    masks: list[Pattern] = []
    for source in idioms:
        try:
            masks.append(parse_pattern(source, classes))
        except ValueError as exc:
            raise ValueError(f"idiom {source!r}: {exc}") from None
    ctx = {key: frozenset(_fold_word(w) for w in context.get(key, ())) for key in CONTEXT_KEYS}
    for key in CONTEXT_KEYS:
        vocab.update(ctx[key])
    for mask in masks:
        vocab.update(mask.literal_words())
    return LanguageRules(
        rules=tuple(compiled),
        idioms=tuple(masks),
        negation=ctx["negation"],
        first_person=ctx["first_person"],
        third_party=ctx["third_party"],
        topic=ctx["topic"],
        vocabulary=frozenset(vocab),
    )


# ------------------------------------------------------------------------------------ detector


@dataclass(frozen=True)
class _Hit:
    rule: Rule
    lang: str
    positions: tuple[int, ...]  # of the words matching the pattern's terms

    @property
    def start(self) -> int:
        return self.positions[0]

    @property
    def end(self) -> int:
        return self.positions[-1]


class CrisisDetector:
    """Rules compiled once (per policy load) and applied to every incoming message.

    ``phrases_by_lang`` are exact phrases (``crisis.toml``'s ``[phrases]``) that call for the
    protocol word for word; ``rules_by_lang`` the triage rules. Every language's rules apply to
    every message: clients do not always write in the language they chose.
    """

    def __init__(
        self,
        phrases_by_lang: Mapping[str, Iterable[str]],
        rules_by_lang: Mapping[str, LanguageRules] | None = None,
    ) -> None:
        rules: list[tuple[Rule, str]] = []
        seen: set[Pattern] = set()
        for lang, phrases in phrases_by_lang.items():
            for number, phrase in enumerate(phrases, 1):
                pattern = _phrase_pattern(phrase)
                if pattern is None or pattern in seen:
                    continue
                seen.add(pattern)
                rules.append((Rule(f"{lang}.phrase{number}", pattern, Outcome.PROTOCOL), lang))
        vocab: set[str] = set()
        idioms: list[Pattern] = []
        context: dict[str, set[str]] = {k: set() for k in ("neg", "first", "third", "topic")}
        for lang, lr in (rules_by_lang or {}).items():
            rules.extend((r, lang) for r in lr.rules)
            idioms.extend(lr.idioms)
            vocab.update(lr.vocabulary)
            context["neg"].update(lr.negation)
            context["first"].update(lr.first_person)
            context["third"].update(lr.third_party)
            context["topic"].update(lr.topic)
        for rule, _lang in rules:
            vocab.update(rule.pattern.literal_words())
        self._count = len(rules)
        # Rules indexed by the words their first term accepts; prefix-led rules are tried always.
        self._index: dict[str, list[tuple[Rule, str]]] = {}
        self._prefix_led: list[tuple[Rule, str]] = []
        for rule, lang in rules:
            first = rule.pattern.terms[0]
            for word in first.words:
                self._index.setdefault(word, []).append((rule, lang))
            if first.prefixes:
                self._prefix_led.append((rule, lang))
        self._idioms = tuple(idioms)
        self._vocab = frozenset(vocab)
        self._negation = frozenset(context["neg"])
        self._first = frozenset(context["first"])
        self._third = frozenset(context["third"])
        self._topic = frozenset(context["topic"])
        self._near: dict[str, set[str]] = {}
        for word in self._vocab:
            if len(word) >= FUZZY_MIN:
                for key in _deletions(word):
                    self._near.setdefault(key, set()).add(word)
        self._forms_cache: dict[str, tuple[frozenset[str], ...]] = {}

    def __len__(self) -> int:
        return self._count

    # -------------------------------------------------------------------------- public API

    def triage(self, text: str) -> Triage:
        """The outcome for ``text`` with a content-free reason."""
        best = NO_RISK
        for sentence in _SENTENCE.split(text):
            found = self._sentence(sentence)
            if found.outcome.rank > best.outcome.rank or (
                best.reason is None and found.reason is not None
            ):
                best = found
            if best.outcome is Outcome.PROTOCOL:
                break
        return best

    def find(self, text: str) -> str | None:
        """Language of the rule that flagged ``text`` (protocol or check), or ``None``.

        Returns the language, not the phrase: what matched is message content and must not end up
        in a log line or an audit row.
        """
        found = self.triage(text)
        return found.lang if found.outcome is not Outcome.NONE else None

    def detect(self, text: str) -> bool:
        """Whether ``text`` needs a human look: ``protocol`` or ``check``.

        Callers that cannot ask the check question treat both as a crisis, the safe side.
        """
        return self.find(text) is not None

    # ---------------------------------------------------------------------------- matching

    def _sentence(self, sentence: str) -> Triage:
        forms = self._forms(sentence)
        if not forms:
            return NO_RISK
        forms = self._mask_idioms(forms)
        best = NO_RISK
        for hit in self._hits(forms):
            outcome, why = self._judge(hit, forms)
            reason = hit.rule.id + why
            if outcome.rank > best.outcome.rank or best.reason is None:
                best = Triage(outcome, reason, hit.lang)
            if outcome is Outcome.PROTOCOL:
                break
        return best

    def _forms(self, text: str) -> list[frozenset[str]]:
        """Per word, the known words it may stand for (itself, its parts, near spellings)."""
        out: list[frozenset[str]] = []
        for token in _raw_tokens(text):
            cached = self._forms_cache.get(token)
            if cached is None:
                cached = self._token_forms(token)
                if len(self._forms_cache) < 50_000:
                    self._forms_cache[token] = cached
            out.extend(cached)
        return out

    def _token_forms(self, token: str) -> tuple[frozenset[str], ...]:
        raw = _raw_word(token)
        word = squeeze(raw)
        if word in self._vocab:
            return (frozenset({word}),)
        parts = self._split(raw)
        if parts is not None:
            return tuple(frozenset({p}) for p in parts)
        near = self._near_words(word)
        return (frozenset({word, *near}),)

    def _near_words(self, word: str) -> set[str]:
        if len(word) < FUZZY_MIN - 1:
            return set()
        found: set[str] = set()
        for key in (word, *_deletions(word)):
            for candidate in self._near.get(key, ()):
                if _distance_at_most_one(word, candidate):
                    found.add(candidate)
        return found

    def _split(self, raw: str) -> list[str] | None:
        """``raw`` as two or more known words written together (fewest parts), else ``None``."""
        if not 6 <= len(raw) <= 40:
            return None
        n = len(raw)
        best: list[list[str] | None] = [None] * (n + 1)
        best[0] = []
        for end in range(1, n + 1):
            for begin in range(max(0, end - 20), end):
                head = best[begin]
                if head is None or (end - begin == 1 and begin > 0):
                    continue  # a one-letter word ("i") only leads
                piece = squeeze(raw[begin:end])
                if piece in self._vocab:
                    candidate = [*head, piece]
                    current = best[end]
                    if current is None or len(candidate) < len(current):
                        best[end] = candidate
        parts = best[n]
        if parts is None or len(parts) < 2 or max(len(p) for p in parts) < 4:
            return None
        return parts

    def _mask_idioms(self, forms: list[frozenset[str]]) -> list[frozenset[str]]:
        masked = list(forms)
        empty: frozenset[str] = frozenset()
        for idiom in self._idioms:
            for start in range(len(forms)):
                found = _match_at(idiom, forms, start)
                if found is not None:
                    for i in range(start, found[-1] + 1):
                        masked[i] = empty
        return masked

    def _hits(self, forms: list[frozenset[str]]) -> Iterator[_Hit]:
        for start, token_forms in enumerate(forms):
            candidates: list[tuple[Rule, str]] = []
            for form in token_forms:
                candidates.extend(self._index.get(form, ()))
            candidates.extend(self._prefix_led)
            for rule, lang in candidates:
                found = _match_at(rule.pattern, forms, start)
                if found is not None:
                    yield _Hit(rule, lang, found)

    def _judge(self, hit: _Hit, forms: list[frozenset[str]]) -> tuple[Outcome, str]:
        outcome = hit.rule.outcome
        if outcome is Outcome.CHECK:
            if any(not f.isdisjoint(self._topic) for f in forms):
                return Outcome.NONE, "+topic"
            return outcome, ""
        # A negation just before the match or inside its gaps ("I'm not suicidal"); one the
        # pattern asks for itself ("don't want to live") negates nothing.
        around = range(max(0, hit.start - LOOKBACK_NEGATION), hit.end + 1)
        if any(i not in hit.positions and not forms[i].isdisjoint(self._negation) for i in around):
            return Outcome.CHECK, "+negated"
        if self._third_party(hit, forms):
            return Outcome.CHECK, "+third-party"
        return outcome, ""

    def _third_party(self, hit: _Hit, forms: list[frozenset[str]]) -> bool:
        """Someone else is the subject: the last person named before or inside the match is a
        third party, and the writer does not come back after them."""
        window_start = max(0, hit.start - LOOKBACK_SUBJECT)
        last: int | None = None
        for i in range(window_start, hit.end + 1):
            if not forms[i].isdisjoint(self._third):
                last = i
        if last is None:
            return False
        return all(forms[i].isdisjoint(self._first) for i in range(last + 1, hit.end + 1))


def _match_at(
    pattern: Pattern, forms: Sequence[frozenset[str]], start: int
) -> tuple[int, ...] | None:
    """Positions of the words matching each term of ``pattern`` from ``start``, or ``None``."""
    terms = pattern.terms
    if not terms[0].matches(forms[start]):
        return None

    def rest(term: int, at: tuple[int, ...]) -> tuple[int, ...] | None:
        if term == len(terms):
            return at
        gap = pattern.gaps[term - 1]
        last = at[-1]
        for nxt in range(last + 1, min(len(forms), last + 2 + gap)):
            if terms[term].matches(forms[nxt]):
                found = rest(term + 1, (*at, nxt))
                if found is not None:
                    return found
        return None

    return rest(1, (start,))


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


@lru_cache(maxsize=8)
def _compiled(key: tuple[tuple[str, tuple[str, ...]], ...]) -> CrisisDetector:
    return CrisisDetector(dict(key))


def detect(text: str, phrases_by_lang: Mapping[str, Iterable[str]]) -> bool:
    """One-off phrase check; long-running code should keep a ``CrisisDetector`` instead.

    The compiled detector is cached per phrase set, so repeated calls with one policy are cheap.
    """
    key = tuple(sorted((lang, tuple(phrases)) for lang, phrases in phrases_by_lang.items()))
    return _compiled(key).detect(text)
