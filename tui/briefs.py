"""Reading the case channel: the bot's briefs, risk changes, pages and bookings.

The bot writes these from the texts in ``policies/<lang>/messages.toml``. Rather
than guessing at wording, each template is turned into a pattern (its
``{parameters}`` become capture groups), in every language the policy has. So an
operator who rewords a message changes both sides at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from e2ecounsel.policy import Policy

_PARAM = re.compile(r"\{(\w+)\}")
_ROOM_LINK = re.compile(r"https://matrix\.to/#/(![^\s/?]+)")
_KEYS = (
    "brief.new",
    "brief.not_shared",
    "page.crisis",
    "page.urgent",
    "digest.line",
    "booking.counselor_new",
    "booking.counselor_cancelled",
    "risk.set",
)


@dataclass(frozen=True)
class CaseFact:
    """One thing the case channel said about a session room."""

    kind: str  # the message key, e.g. "brief.new"
    room_id: str
    fields: Mapping[str, str]


def _pattern(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    for m in _PARAM.finditer(template):
        parts.append(re.escape(template[pos : m.start()].replace("{{", "{").replace("}}", "}")))
        name = m.group(1)
        parts.append(f"(?P<{name}>.*?)" if name not in seen else ".*?")
        seen.add(name)
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts), re.DOTALL)


class CaseReader:
    """Recognises the bot's case-channel texts in any of the policy's languages."""

    def __init__(self, policy: Policy) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        self._risk_words: dict[str, str] = {}
        for lang in policy.languages:
            texts = policy.messages.get(lang, {})
            for key in _KEYS:
                template = texts.get(key)
                if template:
                    self._patterns.append((key, _pattern(template.strip())))
            for level in ("high", "medium", "low"):
                word = texts.get(f"risk.{level}")
                if word:
                    self._risk_words[word.strip().casefold()] = level
        for level in ("high", "medium", "low"):
            self._risk_words.setdefault(level, level)

    def risk_level(self, word: str) -> str | None:
        """``"tinggi"`` → ``"high"``; None for a word that is no risk level."""
        return self._risk_words.get(word.strip().rstrip(".").casefold())

    def read(self, body: str) -> CaseFact | None:
        text = body.strip()
        for key, pattern in self._patterns:
            m = pattern.fullmatch(text)
            if m is None:
                continue
            fields = {k: (v or "").strip() for k, v in m.groupdict().items()}
            link = _ROOM_LINK.search(fields.get("room_link", ""))
            if key == "risk.set":
                return CaseFact(key, "", fields)
            if link is None:
                continue
            return CaseFact(key, link.group(1), fields)
        return None


def screening_lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())
