"""Crisis triage: folding, patterns, context, and the figures on the shipped corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2ecounsel.domain import crisis_model
from e2ecounsel.domain.crisis import (
    CrisisDetector,
    LanguageRules,
    Outcome,
    build_rules,
    detect,
    parse_pattern,
    words,
)
from e2ecounsel.domain.crisis_corpus import (
    CorpusError,
    Report,
    Sample,
    evaluate,
    parse_corpus,
    training_examples,
)
from e2ecounsel.domain.crisis_model import CrisisModel, Example
from e2ecounsel.policy import CRISIS_HELDOUT, CRISIS_TUNING, default_policy_dir, load_policy

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
    "typo": ["want", "mati"],
}
RULES = [
    ("want-die", "@want ~3 @die", "protocol"),
    ("suicide", "suicid*", "check"),
    ("suicidal", "i ~2 suicidal", "protocol"),
    ("bunuh-diri", "bunuh ~1 diri", "check"),
    ("overdose", "overdosis|overdose", "protocol"),
    ("gak-mau-hidup", "@neg ~1 @want ~2 hidup", "protocol"),
    ("jump-bridge", "jump %2 bridge", "protocol"),
]
IDIOMS = ["mati lampu|gaya|kutu", "dying of ~1 laughter|laughing", "ngakak ~1 sampe ~2 mati"]


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
        ("b*nuh s.uicide", ["b", "nuh", "s", "uicide"]),  # only the detector reads masks
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
        "i wnat to die",  # a short key word with two letters swapped
        "aku pengen mtai",
        "i w*nt to die",  # masked letters
        "i want to d.ie",
        "i want to die. ok",
        "jump off the bridge",  # a "%" gap: either order
        "on the bridge i will jump",
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
        "i wnta to die",  # only neighbouring letters swap, only in the typo words
        "i want to ide",
        "i want to d**e",  # three letters shown at least
        "ngakak sampe pengen mati",  # an idiom with a gap
        "bridge over the river jump",  # the gap holds in both orders
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
        ("jump %2", "cannot end"),
        ("a %2 b %2 c", "one '%'"),
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


def test_thousands_of_phrases_still_find_the_one_in_a_long_message() -> None:
    # How fast this is, is measured by `python -m bench.crisis_triage`.
    many = {"en": [f"phrase{i} word{i % 97} tail{i % 13}" for i in range(5000)] + ["kill myself"]}
    d = CrisisDetector(many)
    text = " ".join(f"word{i}" for i in range(2000)) + " kill myself"
    assert d.detect(text)
    assert not d.detect(" ".join(f"word{i}" for i in range(2000)))


def test_the_shipped_rules_judge_a_long_everyday_message_as_no_crisis() -> None:
    d = load_policy(strict=True).crisis.detector()
    text = "aku capek banget kerja hari ini dan pengen tidur lama sekali. " * 60
    assert d.triage(text).outcome is not Outcome.PROTOCOL


# ------------------------------------------------------------------------------- corpus


CORPUS = default_policy_dir() / "crisis"
#: The files the rules are tuned on, and the one kept aside to judge them.
TUNING = ("corpus.tsv", "heldout.tsv")
HELDOUT = "heldout2.tsv"


def _samples(*names: str) -> list[Sample]:
    return [s for name in names for s in parse_corpus((CORPUS / name).read_text("utf-8"))]


def _report(*names: str, with_model: bool = True) -> Report:
    detector = load_policy(strict=True).crisis.detector(with_model)
    return evaluate(detector, _samples(*names))


def test_the_corpus_is_big_enough_and_balanced() -> None:
    samples = _samples(*TUNING, HELDOUT)
    assert len(samples) >= 440
    for lang in ("en", "id"):
        for label in (0, 1):
            assert sum(s.lang == lang and s.label == label for s in samples) >= 100


def test_the_heldout_part_is_not_in_the_tuning_part() -> None:
    tuning = {(s.lang, " ".join(words(s.text))) for s in _samples(*TUNING)}
    heldout = _samples(HELDOUT)
    assert len(heldout) >= 140
    assert not [s.text for s in heldout if (s.lang, " ".join(words(s.text))) in tuning]


# The model is trained on the tuning part, so there the rules are judged alone (the model only
# adds checks: the figures with it are at least these).
@pytest.mark.parametrize("with_model", [False, True])
@pytest.mark.parametrize("lang", ["en", "id"])
def test_tuning_part_recall_and_false_protocol(lang: str, with_model: bool) -> None:
    figures = _report(*TUNING, with_model=with_model).by_lang[lang]
    assert figures.recall >= 0.97
    assert figures.false_protocol_rate <= 0.05
    assert figures.checked == figures.expected_checks


# The held-out part was written before this version of the rules and never used to tune them
# or to train the model: these are the figures on messages triage has not seen (recall,
# false-protocol rate, checks on not-at-risk lines that need none), held at their measured level
# so they cannot silently get worse. The rules alone caught 0.657 (en) and 0.829 (id).
HELDOUT_FLOOR = {"en": (0.94, 0.03, 0.075), "id": (0.97, 0.03, 0.04)}


@pytest.mark.parametrize("lang", ["en", "id"])
def test_heldout_part_recall_and_false_protocol(lang: str) -> None:
    report = _report(HELDOUT)
    figures = report.by_lang[lang]
    recall, false_protocol, false_check = HELDOUT_FLOOR[lang]
    assert figures.recall >= recall
    assert figures.false_protocol_rate <= false_protocol
    assert figures.checked == figures.expected_checks
    calm = [
        j
        for j in report.judged
        if j.sample.lang == lang and j.sample.label == 0 and not j.sample.expect_check
    ]
    assert sum(j.outcome is Outcome.CHECK for j in calm) / len(calm) <= false_check


def test_corpus_lines_are_checked() -> None:
    assert [s.text for s in parse_corpus("# c\n\n1\ten\thi\n")] == ["hi"]
    marked = parse_corpus("# expect: check\n0\ten\ta\n# expect: any\n0\ten\tb\n")
    assert [s.expect_check for s in marked] == [True, False]
    for bad in ("1\ten\n", "2\ten\tx\n", "1\t\tx\n", "# expect: maybe\n"):
        with pytest.raises(CorpusError, match="line 1"):
            parse_corpus(bad)


def test_packaged_corpus_files_exist() -> None:
    assert all(Path(CORPUS / name).is_file() for name in (*TUNING, HELDOUT))
    assert tuple(f"crisis/{n}" for n in TUNING) == CRISIS_TUNING
    assert CRISIS_HELDOUT == f"crisis/{HELDOUT}"


# -------------------------------------------------------------------------- the model


def _tuning_examples() -> tuple[Example, ...]:
    return training_examples(_samples(*TUNING))


def test_the_shipped_model_is_trained_on_the_tuning_part_only() -> None:
    shipped = load_policy(strict=True).crisis.model
    assert shipped is not None
    assert shipped == crisis_model.train(_tuning_examples())
    assert shipped != crisis_model.train(training_examples(_samples(*TUNING, HELDOUT)))


_DIGEST = """
import hashlib
from pathlib import Path
from e2ecounsel.domain.crisis_corpus import parse_corpus, training_examples
from e2ecounsel.domain.crisis_model import train
lines = [s for n in {names!r} for s in parse_corpus(Path({root!r}, n).read_text("utf-8"))]
model = train(training_examples(lines))
print(hashlib.sha256(repr((model.weights, model.prior, model.threshold)).encode()).hexdigest())
"""


def test_two_trainings_give_identical_weights_whatever_the_hash_seed() -> None:
    code = _DIGEST.format(names=TUNING, root=str(CORPUS))
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(done.stdout.strip())
    assert len(digests) == 1
    examples = _tuning_examples()
    assert crisis_model.train(examples) == crisis_model.train(examples)
    first = crisis_model.train(examples).weights
    assert [f for f, _ in first] == sorted(f for f, _ in first)


def test_the_threshold_comes_from_cross_validation() -> None:
    examples = _tuning_examples()
    model = crisis_model.train(examples)
    assert model.threshold == crisis_model.cross_validated_threshold(examples)
    looser = crisis_model.cross_validated_threshold(examples, max_false_check=0.3)
    assert looser < model.threshold


def test_checks_by_the_model_stay_rare_on_lines_it_was_not_chosen_on() -> None:
    # Nested cross-validation: each part's not-at-risk lines are judged by a model (threshold
    # included) trained and chosen on the other parts only.
    examples = _tuning_examples()
    folds = crisis_model.FOLDS
    flagged = {"en": 0, "id": 0}
    negatives = {"en": 0, "id": 0}
    for k in range(folds):
        model = crisis_model.train([e for i, e in enumerate(examples) if i % folds != k])
        for i, ex in enumerate(examples):
            if i % folds == k and not ex.positive:
                negatives[ex.lang] += 1
                flagged[ex.lang] += model.opinion(ex.text) is not None
    for lang in ("en", "id"):
        assert flagged[lang] / negatives[lang] <= 0.15


# Everyday messages to a counselor, not in any corpus file: the model must stay quiet on them
# (it was trained on crisis-like lines only). One English line got a check when measured.
EVERYDAY = {
    "en": (
        "hi, is anyone there?",
        "can we move our session to thursday",
        "thanks for listening yesterday, it helped",
        "my exams start next week and i'm nervous",
        "i had a fight with my roommate about the dishes",
        "sorry i'm late, the bus was slow",
        "what time is our next appointment",
        "i forgot to do the homework you gave me",
        "work has been really busy lately",
        "my mom keeps asking when i'll get married",
        "i started running in the mornings",
        "can you send me that breathing exercise again",
        "i don't know what to talk about today",
        "i slept badly last night because of the noise",
        "my cat is sick and i'm worried about her",
        "i got the job!! starting monday",
        "i feel a bit better this week",
        "is this chat private?",
        "ok see you next time",
        "i think i need to set boundaries with my boss",
    ),
    "id": (
        "halo kak, ada orang di sini?",
        "bisa ganti jadwal ke hari kamis?",
        "makasih ya udah dengerin kemarin",
        "minggu depan aku ujian, deg-degan banget",
        "aku berantem sama teman kos soal cucian piring",
        "maaf telat, tadi macet banget",
        "jam berapa sesi kita berikutnya?",
        "aku lupa ngerjain tugas yang kakak kasih",
        "kerjaan lagi padat banget akhir-akhir ini",
        "mama terus nanya kapan aku nikah",
        "aku mulai lari pagi",
        "bisa kirim lagi latihan napas yang kemarin?",
        "aku bingung mau cerita apa hari ini",
        "semalam aku susah tidur karena tetangga berisik",
        "kucingku sakit, aku khawatir",
        "aku keterima kerja!! mulai senin",
        "minggu ini aku merasa agak mendingan",
        "chat ini rahasia kan?",
        "oke sampai ketemu lagi",
        "kayaknya aku perlu bikin batasan sama atasan",
    ),
}


@pytest.mark.parametrize("lang", ["en", "id"])
def test_everyday_messages_rarely_get_a_check(lang: str) -> None:
    detector = load_policy(strict=True).crisis.detector()
    checked = [t for t in EVERYDAY[lang] if detector.triage(t).outcome is not Outcome.NONE]
    assert len(checked) <= 1


def _yes_to_everything() -> CrisisModel:
    model = crisis_model.train(_tuning_examples())
    return CrisisModel(model.weights, model.prior, float("-inf"), model.vocabulary)


def test_the_model_only_raises_none_to_check() -> None:
    rules = load_policy(strict=True).crisis.rules
    phrases = {"en": ["kill myself"]}
    with_model = CrisisDetector(phrases, rules, _yes_to_everything())
    alone = CrisisDetector(phrases, rules)
    for sample in _samples(*TUNING, HELDOUT):
        before, after = alone.triage(sample.text), with_model.triage(sample.text)
        if before.reason is None and len(words(sample.text)) >= crisis_model.MIN_WORDS:
            assert after.outcome is Outcome.CHECK
            assert after.reason in ("model:en", "model:id") and after.lang == after.reason[6:]
        else:
            assert after == before  # a rule's decision, topic "none" included, stands
    assert with_model.triage("kill myself").outcome is Outcome.PROTOCOL


def test_a_model_check_names_the_language_in_its_reason_and_features_as_evidence() -> None:
    examples = (
        Example("en", "nobody will miss me when im gone", True),
        Example("en", "the weather is nice today", False),
        Example("id", "gak ada yang bakal kangen aku", True),
        Example("id", "cuacanya cerah hari ini", False),
    )
    model = crisis_model.train(examples, threshold=0.0)
    text = "honestly nobody would miss me"
    found = CrisisDetector({}, {}, model).triage(text)
    assert found.outcome is Outcome.CHECK and found.lang == "en"
    assert found.reason == "model:en"  # content-free: it is logged and audited
    assert 1 <= len(found.evidence) <= 3
    known = dict(model.weights)
    assert all(known[f] > 0 and f.split(":", 1)[0] in ("w", "b", "c") for f in found.evidence)
    assert text not in found.evidence
    judged = evaluate(CrisisDetector({}, {}, model), [Sample(1, "en", text, 1)]).judged[0]
    assert judged.reason == " ".join(("model:en", *found.evidence))
    assert model.language("gak ada yang kangen") == "id"
    assert CrisisDetector({}, {}, model).triage("the weather today").outcome is Outcome.NONE


def test_the_model_says_nothing_on_short_replies() -> None:
    detector = CrisisDetector({}, {}, _yes_to_everything())
    for short in ("no", "queue ready", "gak kok", "ok!!"):
        assert detector.triage(short).outcome is Outcome.NONE
    assert detector.triage("ok see you").outcome is Outcome.CHECK


def test_features_are_words_pairs_and_letter_grams() -> None:
    assert crisis_model.features("Mati aja") == sorted(
        {"w:mati", "w:aja", "b:mati+aja"}
        | {"c:<ma", "c:mat", "c:ati", "c:ti>", "c:<mat", "c:mati", "c:ati>", "c:<mati", "c:mati>"}
        | {"c:<aj", "c:aja", "c:ja>", "c:<aja", "c:aja>", "c:<aja>"}
    )
