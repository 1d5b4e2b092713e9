"""The words people type, per language (``<lang>/commands.toml``), and what ``policy check``
says when a translation leaves one out or makes one ambiguous."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2ecounsel.policy import (
    AUDIENCES,
    check_policy,
    load_policy,
)
from tests.policykit import copy_policies, edit, problems


@pytest.fixture(scope="module")
def policy():
    return load_policy()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A private copy of the packaged policies to break one thing at a time."""
    return copy_policies(tmp_path / "policies")


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(text))


# ------------------------------------------------------------------ packaged words


def test_a_typed_word_names_its_command_per_audience(policy) -> None:
    en, id_ = policy.vocabulary("en"), policy.vocabulary("id")
    assert en.command("!Status") == "status"
    assert en.command("cancel 2") == "cancel"
    assert id_.command("Bantuan") == "help"
    assert id_.command("ambil 3", "counselor") == "take"
    assert en.command("take", "client") is None
    assert en.command("") is None
    assert id_.command("help") is None  # an English word is not Indonesian ...
    assert policy.command("help", "client", "id") == "help"  # ... but still understood
    assert policy.command("bantuan", "supervisor", "en") == "help"
    assert policy.command("nonsense", "client", "en") is None


def test_words_help_and_file_order(policy) -> None:
    en, id_ = policy.vocabulary("en"), policy.vocabulary("id")
    assert en.commands("client")[0] == "status"
    assert en.commands("client")[-1] == "help"
    assert en.commands("counselor") == ("cases", "close", "risk", "refer", "book", "take", "help")
    assert en.commands("supervisor") == ("queue", "oncall", "reassign", "take", "help")
    assert id_.words("book") == ("pesan",)
    assert id_.words("queue", "supervisor") == ("antrean", "antrian")
    assert en.help("erase") == "delete everything we store about you"
    assert en.args("risk", "counselor") == "N high|medium|low"
    assert en.args("status") == ""
    with pytest.raises(KeyError, match="no client command 'close'"):
        en.words("close")
    for lang in policy.languages:
        vocabulary = policy.vocabulary(lang)
        for audience in AUDIENCES:
            assert vocabulary.commands(audience) == policy.vocabulary("en").commands(audience)


def test_yes_no_skip_and_their_meaning(policy) -> None:
    en, id_ = policy.vocabulary("en"), policy.vocabulary("id")
    assert {"yes", "y"} <= en.yes and "ya" not in en.yes
    assert {"ya", "iya"} <= id_.yes
    assert "tidak" in id_.no and "lewati" in id_.skip
    assert id_.meaning(" Ya! ") == "yes"
    assert en.meaning("NO.") == "no"
    assert en.meaning("skip") == "skip"
    assert en.meaning("maybe") is None
    assert en.meaning("ya") is None
    assert policy.meaning("ya", "en") == "yes"  # any language, the client's first
    assert policy.meaning("tidak", "en") == "no"


def test_the_intake_accepts_the_answers_of_every_language(policy) -> None:
    words = policy.answer_words()
    assert {"agree", "setuju", "saya setuju"} <= words["agree"]
    assert {"yes", "ya", "iya", "y"} <= words["yes"]
    # The bridge and the intake once disagreed on these; there is one list now.
    assert {"cancel", "batal", "nggak", "enggak"} <= words["no"]
    assert {"lewati", "lewat", "skip"} <= words["skip"]
    assert {"later", "nanti saja"} <= words["later"]


def test_the_packaged_vocabularies_check_clean() -> None:
    assert check_policy() == []


# ------------------------------------------------------------------ policy check


def test_a_command_missing_in_a_translation_is_named(folder: Path) -> None:
    edit(folder / "id" / "commands.toml", '[client.bookings]\nwords = ["jadwal"]\n', "")
    edit(folder / "id" / "commands.toml", 'help = "sesi langsung yang sudah Anda pesan"\n', "")
    found = problems(folder)
    line = line_of(folder / "id" / "commands.toml", "[client.")
    assert found == [
        f"id/commands.toml: client.bookings (line {line}): is missing "
        "(every language needs every command of en/commands.toml)"
    ]


def test_an_answer_list_missing_in_a_translation_is_named(folder: Path) -> None:
    edit(folder / "id" / "commands.toml", 'skip = ["lewati", "lewat"]\n', "")
    line = line_of(folder / "id" / "commands.toml", "[answers]")
    assert problems(folder) == [f"id/commands.toml: answers.skip (line {line}): is missing"]


def test_a_command_only_a_translation_has_is_an_error(folder: Path) -> None:
    path = folder / "id" / "commands.toml"
    edit(path, "[client.erase]", '[client.erse]\nwords = ["buang"]\nhelp = "x"\n\n[client.erase]')
    assert problems(folder) == [
        f"id/commands.toml: client.erse (line {line_of(path, '[client.erse]')}): is not a "
        "command of en/commands.toml (did you mean 'client.erase'?)"
    ]


def test_a_word_of_two_commands_of_one_audience_is_an_error(folder: Path) -> None:
    path = folder / "id" / "commands.toml"
    edit(path, 'words = ["jadwal"]', 'words = ["jadwal", "pesan"]')
    line = line_of(path, 'words = ["jadwal", "pesan"]')
    assert problems(folder) == [
        f"id/commands.toml: client.bookings.words (line {line}): 'pesan' is also a word of "
        "'book'; a word means one thing"
    ]


def test_the_same_word_for_two_audiences_is_fine(policy) -> None:
    en = policy.vocabulary("en")
    assert en.command("book", "client") == en.command("book", "counselor") == "book"
    assert en.command("take", "counselor") == en.command("take", "supervisor") == "take"


def test_a_word_that_answers_yes_and_no_is_an_error(folder: Path) -> None:
    path = folder / "en" / "commands.toml"
    edit(path, 'no = ["no", "n", "cancel"]', 'no = ["no", "n", "cancel", "Y"]')
    line = line_of(path, 'no = ["no"')
    assert problems(folder) == [
        f"en/commands.toml: answers.no (line {line}): 'y' is also a word of 'yes'; "
        "a word means one thing"
    ]


def test_an_empty_word_list_is_an_error(folder: Path) -> None:
    path = folder / "en" / "commands.toml"
    edit(path, 'words = ["oncall"]', "words = []")
    edit(path, 'skip = ["skip"]', "skip = []")
    found = problems(folder)
    assert found == [
        f"en/commands.toml: answers.skip (line {line_of(path, 'skip = []')}): "
        "must list at least one word",
        f"en/commands.toml: supervisor.oncall.words (line {line_of(path, 'words = []')}): "
        "must list at least one word",
    ]


def test_a_command_word_must_be_one_typable_word(folder: Path) -> None:
    path = folder / "en" / "commands.toml"
    edit(path, 'words = ["counselors"]', 'words = ["counselors", "who helps", "!"]')
    found = problems(folder)
    assert all(p.startswith("en/commands.toml: client.counselors.words[") for p in found)
    assert [re.sub(r".*: ", "", p) for p in found] == [
        "'who helps' is not something a person can type as one word",
        "'!' is not something a person can type as one word",
    ]


def test_a_missing_file_and_an_unknown_key(folder: Path) -> None:
    (folder / "id" / "commands.toml").unlink()
    edit(folder / "en" / "commands.toml", 'help = "see the counselors"', 'hlp = "x"')
    found = problems(folder)
    assert "id/commands.toml: file is missing" in found
    assert any(
        p.startswith("en/commands.toml: client.counselors.hlp (line ")
        and p.endswith("unknown key (did you mean 'help'?)")
        for p in found
    )
    assert any(p.startswith("en/commands.toml: client.counselors.help") for p in found)
