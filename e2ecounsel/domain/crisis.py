"""Crisis phrase detection over whole words, tolerant of case, accents, spacing and punctuation.

Text and phrases are folded the same way (NFKC, accents and invisible format characters removed,
case-folded) and split into words; a phrase matches when its words appear consecutively in the text.
Matching whole words is what keeps "skill myself" from matching "kill myself" while "Kill-myself!"
and "kill   myself" still do. Phrases are indexed by their first word, so checking a message costs
one dictionary lookup per word of the message, whatever the number of phrases.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

# Letters and digits; underscores and everything else separate words.
_WORD = re.compile(r"[^\W_]+")
# Invisible characters that separate words (zero width space); other format characters are dropped.
_SEPARATING_FORMAT = frozenset("\u200b")


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


def words(text: str) -> list[str]:
    """The folded words of ``text``."""
    return _WORD.findall(fold(text))


class CrisisDetector:
    """Phrases compiled once (per policy load) and checked against every incoming message."""

    def __init__(self, phrases_by_lang: Mapping[str, Iterable[str]]) -> None:
        index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        seen: set[tuple[str, ...]] = set()
        for lang, phrases in phrases_by_lang.items():
            for phrase in phrases:
                tokens = tuple(words(phrase))
                if not tokens or tokens in seen:
                    continue
                seen.add(tokens)
                index.setdefault(tokens[0], []).append((tokens, lang))
        self._index = index
        self._count = len(seen)

    def __len__(self) -> int:
        return self._count

    def find(self, text: str) -> str | None:
        """Language of the first phrase found in ``text``, or ``None``.

        Returns the language, not the phrase: what matched is message content and must not end up
        in a log line or an audit row.
        """
        tokens = words(text)
        for i, token in enumerate(tokens):
            for phrase, lang in self._index.get(token, ()):
                if tuple(tokens[i : i + len(phrase)]) == phrase:
                    return lang
        return None

    def detect(self, text: str) -> bool:
        """Whether ``text`` contains any crisis phrase."""
        return self.find(text) is not None


@lru_cache(maxsize=8)
def _compiled(key: tuple[tuple[str, tuple[str, ...]], ...]) -> CrisisDetector:
    return CrisisDetector(dict(key))


def detect(text: str, phrases_by_lang: Mapping[str, Iterable[str]]) -> bool:
    """One-off check; long-running code should keep a ``CrisisDetector`` instead.

    The compiled detector is cached per phrase set, so repeated calls with one policy are cheap.
    """
    key = tuple(sorted((lang, tuple(phrases)) for lang, phrases in phrases_by_lang.items()))
    return _compiled(key).detect(text)
