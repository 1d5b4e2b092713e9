"""Making untrusted text safe to store, show in a terminal, and compare.

Client text ends up in a counselor's terminal (the TUI) and in case briefs. Terminal escape
sequences could repaint or hijack that terminal, and bidi overrides can make text read
differently from what it is; both are removed here once, at the edge, so every later layer can
trust what it gets.
"""

from __future__ import annotations

import re
import unicodedata

# ESC-introduced sequences: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings (terminated by BEL or
# ST), and two-character escapes. The 8-bit C1 forms (0x9b CSI, 0x9d OSC, ...) are handled alike.
_ESCAPES = re.compile(
    r"""
    (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?      # CSI
  | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])                  # OSC, DCS, SOS, PM, APC ...
    [^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?                    # ... up to BEL or ST
  | \x1b[\x20-\x2f]*[\x30-\x7e]?                             # other ESC sequences
    """,
    re.VERBOSE,
)
# Bidi embeddings/overrides (U+202A..U+202E) and isolates (U+2066..U+2069): the "Trojan source" set.
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_KEEP_CONTROLS = frozenset("\n\t")


def _drop_controls(s: str) -> str:
    out: list[str] = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in _KEEP_CONTROLS:
            continue
        if cat == "Cs":  # lone surrogates cannot be encoded as UTF-8 later
            continue
        out.append(ch)
    return "".join(out)


def clean_text(s: str, max_chars: int) -> str:
    """Return ``s`` without control characters, escapes or bidi overrides, NFC, trimmed.

    Line breaks (CRLF, CR, U+2028/9) become ``\\n`` so a message keeps its shape; tabs stay. The
    result is cut to ``max_chars`` characters *after* cleaning (callers that want to refuse
    over-long input check the raw length first).
    """
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    s = _ESCAPES.sub("", s)
    s = s.translate(_BIDI)
    s = _drop_controls(s)
    s = unicodedata.normalize("NFC", s).strip()
    if len(s) > max_chars:
        s = s[: max(max_chars, 0)].rstrip()
    return s


def normalize_command(s: str) -> tuple[str, str]:
    """Split a chat line into (command word, arguments).

    The word is case-folded and loses any leading ``!`` so ``!Close`` and ``close`` are the same
    command; arguments keep their case (notes, MXIDs). An empty line gives ``("", "")``.
    """
    cleaned = clean_text(s, len(s) + 1).lstrip("!").lstrip()
    parts = cleaned.split(None, 1)
    if not parts:
        return "", ""
    return parts[0].casefold(), (parts[1].strip() if len(parts) > 1 else "")


def fold_answer(text: str) -> str:
    """Fold an answer for comparison: ``" !Setuju. "`` -> ``"setuju"``, ``"１"`` -> ``"1"``.

    Case, width, runs of spaces and punctuation at either end do not change what an answer
    means; a leading dash does (``-1``).
    """
    s = unicodedata.normalize("NFKC", clean_text(text, len(text) + 1)).casefold()
    s = " ".join(s.split())
    start, end = 0, len(s)
    # A leading dash is kept: "-1" is a negative number, not "1".
    while start < end and _is_edge(s[start]) and unicodedata.category(s[start]) != "Pd":
        start += 1
    while end > start and _is_edge(s[end - 1]):
        end -= 1
    return s[start:end]


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in ("P", "Z")


#: The longest number an answer may be; anything longer is not a choice from a list.
MAX_NUMBER_DIGITS = 6


def parse_number(s: str) -> int | None:
    """The whole number ``s`` spells, or None; never raises.

    People type digits from many keyboards, so any decimal digits count, one
    script at a time: ASCII ``3``, full-width ``３`` (CJK input methods),
    Arabic-Indic ``٣`` and Devanagari ``३``. Characters that only *look* like
    digits are refused: superscripts (``²``), circled or parenthesised numbers
    (``①``), fractions and Roman numerals. (Python's ``str.isdigit`` accepts
    ``²`` and ``int("²")`` then raises; ``int("٣")`` is 3.) Surrounding space is
    ignored; signs, decimal points and digit separators are not numbers here.
    """
    s = s.strip()
    if not s or len(s) > MAX_NUMBER_DIGITS or not s.isdecimal():
        return None
    zeros = {ord(ch) - unicodedata.decimal(ch) for ch in s}
    if len(zeros) != 1:
        return None  # mixed scripts, e.g. "1٣": not something anyone means
    value: int = sum(unicodedata.decimal(ch) * 10**i for i, ch in enumerate(reversed(s)))
    return value
