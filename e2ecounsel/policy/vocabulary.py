"""``<lang>/commands.toml``: the words people type, per language.

Each language's file has the same command ids (per audience) and the same answer lists as the
default language's: a translation that forgets a command would leave that command unreachable
for its speakers, so it is an error here, not a surprise in a chat. Inside one language a word
names one command per audience and one answer per group; an empty word list is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from e2ecounsel.domain.text import fold_answer, normalize_command
from e2ecounsel.policy.model import (
    ANSWER_GROUPS,
    ANSWERS,
    AUDIENCES,
    Audience,
    Command,
    Vocabulary,
)
from e2ecounsel.policy.toml import ID_RE, File, Run, Table, suggest

_COMMAND_KEYS = ("words", "help", "args")


def load_vocabularies(run: Run, languages: Sequence[str], default: str) -> dict[str, Vocabulary]:
    """The vocabulary of every language, each checked against the default language's."""
    out: dict[str, Vocabulary] = {}
    files: dict[str, File] = {}
    for lang in languages:
        rel = f"{lang}/commands.toml"
        f = files[lang] = run.file(rel)
        data = f.parse(run.root / lang / "commands.toml")
        out[lang] = _vocabulary(lang, Table(f, data or {}, absent=data is None))
    ref = out.get(default)
    if ref is None or default not in files or not files[default].source:
        return out
    for lang, vocabulary in out.items():
        if lang != default and files[lang].source:
            _compare(files[lang], vocabulary, ref)
    return out


def _vocabulary(lang: str, root: Table) -> Vocabulary:
    root.check_keys(("answers", *AUDIENCES), ("answers",))
    answers_table = root.table("answers")
    answers_table.check_keys(ANSWERS, () if root.absent else ANSWERS)
    answers = {name: _words(answers_table, name, fold_answer) for name in ANSWERS}
    for group in ANSWER_GROUPS:
        _no_shared_words(answers_table, group, answers)
    entries: dict[tuple[Audience, str], Command] = {}
    for audience in AUDIENCES:
        table = root.table(audience, required=False)
        for command_id in table.data:
            entry = table.table(command_id)
            if not ID_RE.match(command_id):
                table.error(command_id, "a command id is lower-case letters, digits, '-' or '_'")
            entry.check_keys(_COMMAND_KEYS, ("words", "help"))
            words = _words(entry, "words", _command_word)
            entries[(audience, command_id)] = Command(
                id=command_id,
                audience=audience,
                words=words,
                help=entry.text("help"),
                args=entry.text("args", "", empty_ok=True).strip(),
            )
        _no_shared_words(
            table,
            [c.id for c in entries.values() if c.audience == audience],
            {c.id: c.words for c in entries.values() if c.audience == audience},
            suffix=".words",
        )
    return Vocabulary(
        lang=lang,
        entries=MappingProxyType(entries),
        answers=MappingProxyType({n: frozenset(words) for n, words in answers.items()}),
    )


def _command_word(word: str) -> str:
    folded, rest = normalize_command(word)
    return "" if rest else folded


def _words(table: Table, name: str, fold: Callable[[str], str]) -> tuple[str, ...]:
    """The list ``name`` of ``table``, folded the way typed text is folded before it is
    compared; a list that is empty or holds something that can never match is an error."""
    raw = table.texts(name)
    if name in table.data and isinstance(table.data[name], list) and not table.data[name]:
        table.error(name, "must list at least one word")
    out: list[str] = []
    for i, word in enumerate(raw):
        folded = fold(word)
        if not folded:
            table.error(f"{name}[{i}]", f"{word!r} is not something a person can type as one word")
        elif folded in out:
            table.error(f"{name}[{i}]", f"{word!r} is listed twice")
        else:
            out.append(folded)
    return tuple(out)


def _no_shared_words(
    table: Table,
    names: Sequence[str],
    words: Mapping[str, Sequence[str]],
    *,
    suffix: str = "",
) -> None:
    """A word in two of ``names``' lists is an error on the later one."""
    owner: dict[str, str] = {}
    for name in names:
        for word in words.get(name, ()):
            if word in owner:
                table.error(
                    f"{name}{suffix}",
                    f"{word!r} is also a word of {owner[word]!r}; a word means one thing",
                )
            else:
                owner[word] = name


def _compare(f: File, vocabulary: Vocabulary, ref: Vocabulary) -> None:
    """Every command of the default language ``ref`` must be in ``vocabulary``, and no other."""
    mine = set(vocabulary.entries)
    for audience, command_id in ref.entries:
        if (audience, command_id) not in mine:
            f.error(
                f"{audience}.{command_id}",
                f"is missing (every language needs every command of {ref.lang}/commands.toml)",
                at=audience,
            )
    known = [f"{a}.{c}" for a, c in ref.entries]
    for audience, command_id in vocabulary.entries:
        if (audience, command_id) not in ref.entries:
            key = f"{audience}.{command_id}"
            f.error(
                key,
                f"is not a command of {ref.lang}/commands.toml" + suggest(key, known),
            )
