"""Operators' crisis tooling: ``policy crisis-test``, ``policy check`` on the corpus,
mistakes in ``crisis/<lang>.toml`` reported with file, key and line, and the reviewed
crisis resources (zones, last check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2ecounsel.cli import main
from e2ecounsel.policy import PolicyInvalid, check_policy, load_policy
from tests.unit.test_policy import edit, folder, problems

__all__ = ["folder"]  # the fixture, shared with the policy tests

LINES = (
    "# a comment\n"
    "\n"
    "1\ten\ti want to die\n"
    "1\tid\tpengen bundir\n"
    "1\ten\tthe weather is nice\n"
    "0\ten\tmy thesis on suicide prevention\n"
    "0\ten\tI'm not suicidal\n"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.tsv"
    path.write_text(LINES, encoding="utf-8")
    return path


def test_json_prints_one_object_per_judged_line_and_nothing_else(
    capsys: pytest.CaptureFixture[str], sample: Path
) -> None:
    code, out, _ = run(capsys, "policy", "crisis-test", str(sample), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"label": 1, "lang": "en", "text": "i want to die", "decision": "protocol"},
        {"label": 1, "lang": "id", "text": "pengen bundir", "decision": "protocol"},
        {"label": 1, "lang": "en", "text": "the weather is nice", "decision": "none"},
        {"label": 0, "lang": "en", "text": "my thesis on suicide prevention", "decision": "none"},
        {"label": 0, "lang": "en", "text": "I'm not suicidal", "decision": "check"},
    ]


def test_without_json_the_misses_and_a_summary(
    capsys: pytest.CaptureFixture[str], sample: Path
) -> None:
    code, out, _ = run(capsys, "policy", "crisis-test", str(sample))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "missed: line 5 (en, none): the weather is nice"
    assert "en: recall 0.500 (1/2 at risk caught), full protocol on 0.0% of the others" in out
    assert "id: recall 1.000 (1/1 at risk caught)" in out
    assert "i want to die" not in out  # caught lines are not listed


def test_a_bad_file_is_one_line_and_no_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\ten\tok\nyes\ten\tx\n", encoding="utf-8")
    code, out, err = run(capsys, "policy", "crisis-test", str(bad))
    assert (code, out) == (1, "")
    assert err.strip() == f"e2ecounsel: {bad}: line 2: label must be 0 or 1, not 'yes'"
    code, _, err = run(capsys, "policy", "crisis-test", str(tmp_path / "missing.tsv"))
    assert code == 1 and "cannot be read" in err


def test_policies_option_uses_the_operators_rules(
    capsys: pytest.CaptureFixture[str], sample: Path, folder: Path
) -> None:
    with (folder / "crisis" / "en.toml").open("a", encoding="utf-8") as f:
        f.write('\n[[rules]]\nid = "weather"\npattern = "weather ~2 nice"\noutcome = "check"\n')
    code, out, _ = run(
        capsys, "policy", "crisis-test", str(sample), "--policies", str(folder), "--json"
    )
    assert code == 0
    assert json.loads(out.splitlines()[2])["decision"] == "check"


def test_policy_check_reports_both_corpus_parts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0
    assert "crisis/corpus.tsv:" in out and "crisis/heldout.tsv:" in out
    assert out.strip().endswith("policies OK") or "policies OK (" in out


def test_policy_check_fails_when_corpus_recall_drops(folder: Path) -> None:
    assert check_policy(folder) == []
    misses = "".join(f"1\ten\tplain words number {i}\n" for i in range(10))
    with (folder / "crisis" / "corpus.tsv").open("a", encoding="utf-8") as f:
        f.write(misses)
    with pytest.raises(Exception, match=r"catch 0\.\d+ of the at-risk 'en' lines, below 0\.95"):
        check_policy(folder)


def test_a_broken_corpus_line_fails_policy_check(folder: Path) -> None:
    with (folder / "crisis" / "corpus.tsv").open("a", encoding="utf-8") as f:
        f.write("1 en spaces instead of tabs\n")
    with pytest.raises(Exception, match=r"crisis/corpus.tsv: line \d+: expected label"):
        check_policy(folder)


def test_rule_mistakes_name_file_key_and_line(folder: Path) -> None:
    rules = folder / "crisis" / "en.toml"
    edit(rules, 'pattern = "@want ~3 @die"', 'pattern = "@wants ~3 @die"')
    edit(rules, 'id = "wish-dead"', 'id = "want-die"')
    edit(
        rules,
        'pattern = "@kill ~1 @me"\noutcome = "protocol"',
        'pattern = "@kill ~1 @me"\noutcome = "page"',
    )
    found = "\n".join(problems(folder))
    assert (
        "crisis/en.toml: rules[0].pattern (line " in found
        and "unknown word class '@wants'" in found
    )
    assert "'want-die' is used twice" in found
    assert "rules[2].outcome" in found and "'protocol', 'check'" in found


def test_unknown_keys_and_multiword_entries(folder: Path) -> None:
    rules = folder / "crisis" / "id.toml"
    edit(rules, "[context]", "[context]\nnegasi = []")
    edit(rules, 'aku = ["aku",', 'aku = ["aku saya",')
    found = "\n".join(problems(folder))
    assert "crisis/id.toml: context.negasi" in found and "did you mean 'negation'" in found
    assert "words.aku[0]" in found and "must be one word" in found


def test_a_folder_without_rules_loads_with_a_warning_but_fails_its_corpus(folder: Path) -> None:
    (folder / "crisis" / "id.toml").unlink()
    assert any("crisis/id.toml is missing" in w for w in load_policy(folder).warnings())
    with pytest.raises(PolicyInvalid, match="'id' lines, below 0.95"):
        check_policy(folder)


def test_indonesia_lists_its_three_zones_and_more_than_one_number() -> None:
    policy = load_policy()
    indonesia = policy.crisis.country("ID")
    assert [z.zone for z in indonesia.zones] == ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"]
    assert indonesia.zone_label("id", "Asia/Makassar").startswith("WITA")
    assert indonesia.zone_label("en", "Asia/Tokyo") == "Asia/Tokyo"
    line = policy.crisis_line("id", "ID")
    assert all(number in line for number in ("119 ext. 8", "119", "110", "112"))
    assert policy.crisis.country("MY").zones == ()


def test_no_resource_claims_to_be_free_from_any_phone() -> None:
    policy = load_policy()
    for country in policy.crisis.countries:
        for res in country.resources:
            for note in res.note.values():
                assert "any phone" not in note and "telepon mana pun" not in note


def test_last_checked_is_a_date_and_shown_by_policy_check(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    assert load_policy().crisis.last_checked is not None
    code, out, _ = run(capsys, "policy", "check", str(folder))
    assert code == 0 and "crisis resources last checked on 2026-12-01" in out
    edit(folder / "crisis.toml", "last_checked = 2026-12-01", 'last_checked = "recently"')
    assert any("last_checked" in p and "must be a date" in p for p in problems(folder))


def test_a_wrong_zone_is_reported(folder: Path) -> None:
    edit(folder / "crisis.toml", 'zone = "Asia/Makassar"', 'zone = "Asia/Makasar"')
    found = "\n".join(problems(folder))
    assert "countries[0].zones[1].zone" in found and "is not a time zone id" in found


def test_check_and_repeat_windows_come_from_the_policy(folder: Path) -> None:
    crisis = load_policy().crisis
    assert (crisis.check_window.total_seconds(), crisis.repeat_window.total_seconds()) == (
        120 * 60,
        240 * 60,
    )
    edit(folder / "crisis.toml", "check_minutes = 120", "check_minutes = 0")
    edit(folder / "crisis.toml", "repeat_minutes = 240", "repeat_minute = 240")
    found = "\n".join(problems(folder))
    assert "triage.check_minutes" in found and "between 1 and" in found
    assert "triage.repeat_minute" in found and "did you mean 'repeat_minutes'" in found
