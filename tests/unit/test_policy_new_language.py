"""Adding a language is data only, as the README says: a copy of one language's folder, its
entries in the shared files, and ``policy check`` names whatever was forgotten."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from e2ecounsel.policy import check_policy, load_policy
from tests.policykit import copy_policies, edit, problems

_ENTRY = re.compile(r"^(\w+) = ")
_INLINE = re.compile(r'(\bid = ("(?:[^"\\]|\\.)*"))(\s*\})')


def _add_translation(text: str, source: str, new: str) -> str:
    """Beside every ``source`` text of a per-language entry, the same text as ``new``: what an
    operator does by hand (and then translates) in service.toml, crisis.toml and screening/."""
    text = _INLINE.sub(lambda m: f"{m.group(1)}, {new} = {m.group(2)}{m.group(3)}", text)
    text = re.sub(rf"^(\w+)\.{source} = (.*)$", rf"\g<0>\n\1.{new} = \2", text, flags=re.MULTILINE)
    lines = text.splitlines()
    out: list[str] = []
    previous = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        entry = _ENTRY.match(line)
        # An ``id = ...`` right after an ``en = ...`` is a text in Indonesian, not an id.
        if entry and entry.group(1) == source and previous == "en":
            end = i
            if line.endswith(('"""', "[")) and not line.endswith('= """"""'):
                closing = '"""' if line.endswith('"""') else "]"
                end = next(j for j in range(i + 1, len(lines)) if lines[j].endswith(closing))
            block = lines[i : end + 1]
            out.extend(block)
            out.append(f"{new} = " + block[0].split(" = ", 1)[1])
            out.extend(block[1:])
            i = end + 1
            previous = source
            continue
        if entry:
            previous = entry.group(1)
        elif line.startswith("["):
            previous = ""
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


@pytest.fixture
def with_malay(tmp_path: Path) -> Path:
    """The packaged policies plus a toy Malay ('ms'), made the way the README says."""
    folder = copy_policies(tmp_path / "policies")
    shutil.copytree(folder / "id", folder / "ms")
    shutil.copy(folder / "crisis" / "id.toml", folder / "crisis" / "ms.toml")
    edit(folder / "service.toml", 'languages = ["en", "id"]', 'languages = ["en", "id", "ms"]')
    for path in [folder / "service.toml", folder / "crisis.toml", *folder.glob("screening/*.toml")]:
        path.write_text(_add_translation(path.read_text("utf-8"), "id", "ms"), encoding="utf-8")
    return folder


def test_a_new_language_loads_and_checks_clean_with_data_only(with_malay: Path) -> None:
    assert check_policy(with_malay) == []
    policy = load_policy(with_malay)
    assert policy.languages == ("en", "id", "ms")
    assert policy.vocabulary("ms").command("bantuan") == "help"
    assert policy.text("ms", "status.none") == policy.text("id", "status.none")
    assert policy.crisis.reply["ms"] == policy.crisis.reply["id"]
    assert policy.instruments["phq9"].title["ms"] == policy.instruments["phq9"].title["id"]
    assert policy.consent["ms"].text == policy.consent["id"].text


def test_a_command_the_new_language_lacks_is_named(with_malay: Path) -> None:
    path = with_malay / "ms" / "commands.toml"
    edit(path, '[client.language]\nwords = ["bahasa"]\nhelp = "mengganti bahasa"\n', "")
    found = problems(with_malay)
    assert len(found) == 1
    assert re.fullmatch(
        r"ms/commands\.toml: client\.language \(line \d+\): is missing \(every language needs "
        r"every command of en/commands\.toml\)",
        found[0],
    )


def test_a_forgotten_shared_entry_is_named(with_malay: Path) -> None:
    edit(with_malay / "crisis.toml", ', ms = "Indonesia"', "")
    edit(with_malay / "ms" / "messages.toml", "[help]", "[hlep]")
    found = problems(with_malay)
    assert any(
        re.match(r"crisis\.toml: countries\[\d+\]\.label\.ms .*is missing", p) for p in found
    )
    assert any(p.startswith("ms/messages.toml: help.client") for p in found)
