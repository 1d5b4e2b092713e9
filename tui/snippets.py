"""The counselor's own reusable texts, from ``snippets.toml`` in their config dir.

::

    [[snippet]]
    name = "welcome"
    lang = "en"          # optional: shown first for clients in that language
    text = \"\"\"Thank you for writing ...\"\"\"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from e2ecounsel.errors import ConfigError


@dataclass(frozen=True)
class Snippet:
    name: str
    text: str
    lang: str = ""


def load_snippets(path: Path) -> list[Snippet]:
    """Read the snippets file; none if it does not exist; ConfigError naming the
    file and entry when it is malformed."""
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the snippets: {exc}", file=path) from exc
    out: list[Snippet] = []
    for i, item in enumerate(data.get("snippet", [])):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ConfigError("each snippet needs a text", file=path, key=f"snippet[{i}].text")
        out.append(
            Snippet(
                name=str(item.get("name") or item["text"][:30]),
                text=item["text"].strip("\n"),
                lang=str(item.get("lang") or ""),
            )
        )
    return out


def search(snippets: list[Snippet], query: str, lang: str = "") -> list[Snippet]:
    """Snippets whose name or text contains every word of ``query``; the client's
    language first."""
    words = query.casefold().split()
    hits = [
        s for s in snippets if all(w in s.name.casefold() or w in s.text.casefold() for w in words)
    ]
    return sorted(hits, key=lambda s: (0 if lang and s.lang == lang else 1, s.name.casefold()))
