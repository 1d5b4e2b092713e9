"""Crisis triage: folding, patterns, context, and the figures on the shipped corpus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from e2ecounsel.domain.crisis import (
    CrisisDetector,
    LanguageRules,
    Outcome,
    build_rules,
    detect,
    parse_pattern,
    words,
)
from e2ecounsel.domain.crisis_corpus import CorpusError, evaluate, parse_corpus
from e2ecounsel.policy import default_policy_dir, load_policy

PHRASES = {
    "en": ["kill myself", "end my life", "suicide", "want to die"],
    "id": ["bunuh diri", "ingin mati", "mengakhiri hidup"],
}

CLASSES = {
    "want": ["want", "wants", "wanna", "pengen"],
    "die": ["die", "mati"],
    "neg": ["not", "gak"],
}
CONTEXT = {
    "negation": ["not", "never", "gak"],
    "first_person": ["i", "me", "my", "aku"],
    "third_party": ["she", "he", "friend", "dia"],
    "topic": ["thesis", "film", "berita"],
    "filler": ["aja", "to"],
}
RULES = [
    ("want-die", "@want ~3 @die", "protocol"),
    ("suicide", "suicid*", "check"),
    ("suicidal", "i ~2 suicidal", "protocol"),
    ("bunuh-diri", "bunuh ~1 diri", "check"),
    ("overdose", "overdosis|overdose", "protocol"),
    ("gak-mau-hidup", "@neg ~1 @want ~2 hidup", "protocol"),
]
IDIOMS = ["mati lampu|gaya|kutu", "dying of ~1 laughter|laughing"]


@pytest.fixture(scope="module")
def rules() -> LanguageRules:
    return build_rules("xx", CLASSES, CONTEXT, RULES, IDIOMS)


@pytest.fixture(scope="module")
def detector(rules: LanguageRules) -> CrisisDetector:
    return CrisisDetector({}, {"xx": rules})


def outcome(d: CrisisDetector, text: str) -> Outcome:
    return d.triage(text).outcome


# ------------------------------------------------------------------------------- folding


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I WANT TO DIE", ["i", "want", "to", "die"]),
        ("ｗａｎｔ", ["want"]),  # full width
        ("dïé", ["die"]),  # accents
        ("matiii", ["mati"]),  # repeated letters
        ("m4t1", ["mati"]),  # leetspeak digits
        ("barang2", ["barang"]),  # Indonesian reduplication
        ("want 2 die", ["want", "to", "die"]),
        ("I don't", ["i", "do", "not"]),
        ("I can't", ["i", "canot"]),  # squeezed like every word
        ("ki\u00adll\u200bme", ["kil", "me"]),  # soft hyphen dropped, zero width space splits
    ],
)
def test_folding(text: str, expected: list[str]) -> None:
    assert words(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I want to die",
        "I WANT TO DIE",
        "ｉ ｗａｎｔ ｔｏ ｄｉｅ",
        "i wánt to díe",
        "i wanna dieeee",
        "i w4nt to d1e",
        "iwanttodie",  # words run together
        "pengenmatiaja",
        "i want, honestly, to die",  # a gap of up to three words
        "aku pengen mati",
        "Overdoss",  # one typo in a long word
        "overdoiss",  # letters swapped
    ],
)
def test_each_folding_feature_reaches_the_protocol(detector: CrisisDetector, text: str) -> None:
    assert outcome(detector, text) is Outcome.PROTOCOL


@pytest.mark.parametrize(
    "text",
    [
        "i want to go out tonight and maybe we die laughing",  # gap too long, idiom
        "I want to diet",  # a short word is not fuzzy-matched
        "wand to die",  # nor is one of four letters
        "mati lampu lagi, pengen mati gaya",  # idioms are masked
        "I'm dying of laughter",
        "pembunuh dirinya",
        "",
        "   ",
    ],
)
def test_does_not_fire(detector: CrisisDetector, text: str) -> None:
    assert outcome(detector, text) is Outcome.NONE


# ------------------------------------------------------------------------------- context


def test_negation_lowers_the_protocol_to_a_check_never_to_none(
    detector: CrisisDetector,
) -> None:
    assert detector.triage("I'm not suicidal") == detector.triage("i am not suicidal")
    found = detector.triage("i'm not suicidal")
    assert (found.outcome, found.reason) == (Outcome.CHECK, "xx.suicidal+negated")
    assert outcome(detector, "aku gak pengen mati") is Outcome.CHECK
    assert outcome(detector, "i never want to die") is Outcome.CHECK


def test_a_negation_the_pattern_asks_for_is_not_a_negation(detector: CrisisDetector) -> None:
    assert detector.triage("aku gak pengen hidup lagi").reason == "xx.gak-mau-hidup"
    assert outcome(detector, "aku gak pengen hidup lagi") is Outcome.PROTOCOL


def test_a_third_party_is_a_check(detector: CrisisDetector) -> None:
    found = detector.triage("my friend said she wants to die")
    assert (found.outcome, found.reason) == (Outcome.CHECK, "xx.want-die+third-party")
    assert outcome(detector, "dia pengen mati") is Outcome.CHECK


def test_the_writer_coming_back_after_a_third_party_is_the_protocol(
    detector: CrisisDetector,
) -> None:
    assert outcome(detector, "my friend died and i want to die too") is Outcome.PROTOCOL
    # Context does not cross a sentence end.
    assert outcome(detector, "she left. want to die") is Outcome.PROTOCOL


def test_a_topic_turns_a_bare_mention_into_none_not_a_disclosure(
    detector: CrisisDetector,
) -> None:
    assert outcome(detector, "suicide") is Outcome.CHECK
    found = detector.triage("my thesis is about suicide")
    assert (found.outcome, found.reason) == (Outcome.NONE, "xx.suicide+topic")
    assert outcome(detector, "berita bunuh diri") is Outcome.NONE
    assert outcome(detector, "the film made me want to die") is Outcome.PROTOCOL


def test_the_strongest_outcome_wins_across_sentences(detector: CrisisDetector) -> None:
    assert outcome(detector, "suicide. i want to die") is Outcome.PROTOCOL
    assert outcome(detector, "i want to die. suicide") is Outcome.PROTOCOL


def test_reason_and_language_never_carry_the_text(detector: CrisisDetector) -> None:
    found = detector.triage("I want to die")
    assert (found.reason, found.lang) == ("xx.want-die", "xx")
    assert detector.find("I want to die") == "xx"
    assert detector.find("hello") is None


def test_detect_is_true_for_protocol_and_check(detector: CrisisDetector) -> None:
    assert detector.detect("i want to die")
    assert detector.detect("suicide")
    assert not detector.detect("my thesis on suicide")


# ------------------------------------------------------------------------------- patterns


def test_phrases_still_match_word_for_word() -> None:
    d = CrisisDetector(PHRASES)
    assert d.detect("I want to kill myself") and d.detect("Bunuh-Diri")
    assert not d.detect("I want to skill myself up")
    assert detect("Kill-myself!", PHRASES)
    assert not detect("skill myself", PHRASES)


def test_empty_and_duplicate_phrases_ignored() -> None:
    d = CrisisDetector({"en": ["", "  ", "Kill myself", "kill-myself"]})
    assert len(d) == 1
    assert not d.detect("anything at all")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("~2 die", "cannot start"),
        ("want ~9 die", "larger than"),
        ("@nope die", "unknown word class"),
        ("su* die", "too short"),
        ("don't", "one word"),
    ],
)
def test_bad_patterns_are_explained(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pattern(source, CLASSES)


def test_a_bad_rule_names_its_id() -> None:
    with pytest.raises(ValueError, match="rule 'x'"):
        build_rules("xx", CLASSES, CONTEXT, [("x", "@nope", "protocol")])
    with pytest.raises(ValueError, match="rule 'y'"):
        build_rules("xx", CLASSES, CONTEXT, [("y", "die", "none")])


def test_thousands_of_phrases_stay_fast() -> None:
    many = {"en": [f"phrase{i} word{i % 97} tail{i % 13}" for i in range(5000)] + ["kill myself"]}
    d = CrisisDetector(many)
    text = " ".join(f"word{i}" for i in range(2000)) + " kill myself"
    begin = time.perf_counter()
    for _ in range(20):
        assert d.detect(text)
    per_message = (time.perf_counter() - begin) / 20
    assert per_message < 0.05


def test_the_shipped_rules_stay_fast_on_long_messages() -> None:
    d = load_policy(strict=True).crisis.detector()
    text = "aku capek banget kerja hari ini dan pengen tidur lama sekali. " * 60
    begin = time.perf_counter()
    for _ in range(5):
        d.triage(text)
    assert (time.perf_counter() - begin) / 5 < 0.1


# ------------------------------------------------------------------------------- corpus


CORPUS = default_policy_dir() / "crisis"


def _report(name: str):  # type: ignore[no-untyped-def]
    detector = load_policy(strict=True).crisis.detector()
    return evaluate(detector, parse_corpus((CORPUS / name).read_text(encoding="utf-8")))


def test_the_corpus_is_big_enough_and_balanced() -> None:
    samples = [
        s
        for name in ("corpus.tsv", "heldout.tsv")
        for s in parse_corpus((CORPUS / name).read_text())
    ]
    assert len(samples) >= 300
    for lang in ("en", "id"):
        for label in (0, 1):
            assert sum(s.lang == lang and s.label == label for s in samples) >= 60


@pytest.mark.parametrize("lang", ["en", "id"])
def test_tuning_part_recall_and_false_protocol(lang: str) -> None:
    figures = _report("corpus.tsv").by_lang[lang]
    assert figures.recall >= 0.97
    assert figures.false_protocol_rate <= 0.05
    assert figures.checked == figures.expected_checks


# The held-out part was written before the rules and never used to tune them: these are the
# figures on messages the rules have not seen, held so they cannot silently get worse.
HELDOUT_FLOOR = {"en": (0.89, 0.05), "id": (0.94, 0.05)}


@pytest.mark.parametrize("lang", ["en", "id"])
def test_heldout_part_recall_and_false_protocol(lang: str) -> None:
    figures = _report("heldout.tsv").by_lang[lang]
    recall, false_protocol = HELDOUT_FLOOR[lang]
    assert figures.recall >= recall
    assert figures.false_protocol_rate <= false_protocol


def test_corpus_lines_are_checked() -> None:
    assert [s.text for s in parse_corpus("# c\n\n1\ten\thi\n")] == ["hi"]
    marked = parse_corpus("# expect: check\n0\ten\ta\n# expect: any\n0\ten\tb\n")
    assert [s.expect_check for s in marked] == [True, False]
    for bad in ("1\ten\n", "2\ten\tx\n", "1\t\tx\n", "# expect: maybe\n"):
        with pytest.raises(CorpusError, match="line 1"):
            parse_corpus(bad)


def test_packaged_corpus_files_exist() -> None:
    assert Path(CORPUS / "corpus.tsv").is_file() and Path(CORPUS / "heldout.tsv").is_file()
