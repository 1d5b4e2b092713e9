"""The one validation toolkit for policy files (and other operator-written TOML).

tomllib parses but says nothing about meaning and reports no key positions. Every loader here
reads through :class:`Table`, which checks types and ranges, suggests the closest valid key for a
typo and records each problem on its :class:`File` as ``file: key (line N): message``. A getter
that finds a problem returns a harmless placeholder, so one run finds every problem at once.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import cast

LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


class Run:
    """One validation run over a folder: the problems (errors) and notes (warnings) found.

    ``file`` hands out one :class:`File` per relative path, so a later check on a file that
    was already read (a cross-check) still finds line numbers in it.
    """

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[str] = []
        self.notes: list[str] = []
        self._files: dict[str, File] = {}

    def file(self, rel: str) -> File:
        if rel not in self._files:
            self._files[rel] = File(rel, self.problems)
        return self._files[rel]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` an operator most likely meant by ``word``, if any is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    match = closest(word, choices)
    return f" (did you mean {match!r}?)" if match else ""


def find_line(source: str, dotted: str) -> int | None:
    """Best-effort 1-based line of a dotted key (``topics[2].label.en``) in TOML text.

    tomllib does not report key positions; following table headers and ``key =``
    lines in order is right for the way policy files are written, and a wrong guess
    only costs a line number.
    """
    lines = source.splitlines()
    parts = [(m.group(1), m.group(2)) for m in re.finditer(r"([^.\[\]]+)(?:\[(\d+)\])?", dotted)]
    start, found = 0, None
    for name, index in parts:
        hit = _search_line(lines, start, name, int(index) if index is not None else None)
        if hit is None:
            break
        start = found = hit
    return found + 1 if found is not None else None


def _search_line(lines: list[str], start: int, name: str, index: int | None) -> int | None:
    esc = re.escape(name)
    header = re.compile(rf'^\s*(\[\[?)\s*(?:[^\]]*\.)?"?{esc}"?\s*\]\]?\s*(#.*)?$')
    key = re.compile(rf'(?:^|[{{,\s])"?{esc}"?\s*[=.]')
    # A table written only through its subtables: [client.status] locates "client".
    parent = re.compile(rf'^\s*\[\s*(?:[^\]]*\.)?"?{esc}"?\.')
    if index is not None:
        seen = -1
        for i in range(start, len(lines)):
            m = header.match(lines[i])
            if m and m.group(1) == "[[":
                seen += 1
                if seen == index:
                    return i
    for i in range(start, len(lines)):
        if header.match(lines[i]) or parent.match(lines[i]) or key.search(lines[i]):
            return i
    return None


class File:
    """Problems found in one policy file, located by key (and line when findable)."""

    def __init__(self, rel: str, problems: list[str]):
        self.rel = rel
        self.source = ""
        self.problems = problems

    def error(self, key: str, msg: str, *, at: str | None = None) -> None:
        """Record a problem with ``key``; ``at`` is where to look for a line number
        (the enclosing table, for a key that is missing)."""
        if not key:
            self.problems.append(f"{self.rel}: {msg}")
            return
        where_key = key if at is None else at
        line = find_line(self.source, where_key) if self.source and where_key else None
        where = f" (line {line})" if line else ""
        problem = f"{self.rel}: {key}{where}: {msg}"
        if problem not in self.problems:  # a required key is noticed by two checks
            self.problems.append(problem)

    def parse(self, path: Path) -> dict[str, object] | None:
        try:
            self.source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.error("", "file is missing")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.error("", f"cannot be read ({exc.__class__.__name__})")
            return None
        try:
            return tomllib.loads(self.source)
        except tomllib.TOMLDecodeError as exc:
            self.error("", f"is not valid TOML: {exc}")
            return None


def type_name(value: object) -> str:
    """What a TOML value is, in an operator's words."""
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "text"}
    names.update({list: "a list", dict: "a table"})
    return names.get(type(value), type(value).__name__)


class Table:
    """Typed access to one TOML table, reporting every problem to its file.

    On a problem a getter reports it and returns a harmless placeholder so the
    validation can go on and find the other problems in the same run.
    """

    def __init__(
        self, file: File, data: Mapping[str, object], path: str = "", *, absent: bool = False
    ):
        self.file = file
        self.data = data
        self.path = path
        # A missing table is reported once; its keys are then not reported one by one.
        self.absent = absent

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, msg: str) -> None:
        self.file.error(self.key(name) if name else self.path, msg)

    def missing(self, name: str) -> None:
        self.file.error(self.key(name), "is missing", at=self.path)

    def check_keys(self, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
        allowed = list(allowed)
        for name in self.data:
            if name not in allowed:
                self.error(name, "unknown key" + suggest(name, allowed))
        for name in required:
            if name not in self.data:
                self.missing(name)

    def _get(self, name: str, default: object) -> object:
        if name in self.data:
            return self.data[name]
        if default is None and not self.absent:
            self.missing(name)
        return default

    def text(self, name: str, default: str | None = None, *, empty_ok: bool = False) -> str:
        value = self._get(name, default)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.error(name, f"must be text, not {type_name(value)}")
            return ""
        if not empty_ok and not value.strip():
            self.error(name, "must not be empty")
        return value

    def integer(self, name: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self._get(name, default)
        if value is None:
            return lo
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"must be a whole number, not {type_name(value)}")
            return lo
        if not lo <= value <= hi:
            self.error(name, f"must be between {lo} and {hi}, not {value}")
        return value

    def number(self, name: str, lo: float, hi: float, default: float | None = None) -> float:
        value = self._get(name, default)
        if value is None:
            return lo
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"must be a number, not {type_name(value)}")
            return lo
        if not lo <= value <= hi:
            self.error(name, f"must be between {lo:g} and {hi:g}, not {value:g}")
        return float(value)

    def flag(self, name: str, default: bool | None = None) -> bool:
        value = self._get(name, default)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.error(name, f"must be true or false, not {type_name(value)}")
            return False
        return value

    def choice(self, name: str, choices: Sequence[str], default: str | None = None) -> str:
        value = self.text(name, default)
        if value and value not in choices:
            options = ", ".join(repr(c) for c in choices)
            self.error(name, f"must be one of {options}, not {value!r}" + suggest(value, choices))
            return choices[0]
        return value or choices[0]

    def texts(self, name: str, default: Sequence[str] | None = None) -> tuple[str, ...]:
        value = self._get(name, None if default is None else list(default))
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(name, f"must be a list of texts, not {type_name(value)}")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.error(f"{name}[{i}]", "must be non-empty text")
            else:
                out.append(item)
        return tuple(out)

    def table(self, name: str, *, required: bool = True) -> Table:
        value = self.data.get(name)
        if value is None:
            if required and not self.absent:
                self.missing(name)
            return Table(self.file, {}, self.key(name), absent=True)
        if not isinstance(value, dict):
            self.error(name, f"must be a table, not {type_name(value)}")
            return Table(self.file, {}, self.key(name), absent=True)
        return Table(self.file, cast(dict[str, object], value), self.key(name))

    def tables(self, name: str) -> list[Table]:
        value = self.data.get(name)
        if value is None:
            if not self.absent:
                self.missing(name)
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(name, f"must be a list of [[{self.key(name)}]] tables")
            return []
        return [
            Table(self.file, cast(dict[str, object], v), f"{self.key(name)}[{i}]")
            for i, v in enumerate(value)
        ]

    def text_per_language(self, name: str, languages: Sequence[str]) -> dict[str, str]:
        """One text for every language, or a table with one text per language."""
        if name not in self.data or isinstance(self.data[name], str):
            return dict.fromkeys(languages, self.text(name))
        return self.per_language(name, languages)

    def per_language(
        self, name: str, languages: Sequence[str], *, required: bool = True
    ) -> dict[str, str]:
        """A ``{en = "...", id = "..."}`` table with one text per language."""
        if name not in self.data and not required:
            return {}
        if name in self.data and not isinstance(self.data[name], dict):
            example = ", ".join(f'{lang} = "..."' for lang in languages)
            self.error(name, f"must have one text per language, like {name} = {{ {example} }}")
            return {}
        sub = self.table(name)
        sub.check_keys(languages, languages if name in self.data else ())
        return {lang: sub.text(lang) for lang in languages if lang in sub.data}


def fmt(names: Iterable[str]) -> str:
    """Placeholder names as a reader sees them in a template: ``{a}, {b}``."""
    return ", ".join("{" + n + "}" for n in sorted(names))
