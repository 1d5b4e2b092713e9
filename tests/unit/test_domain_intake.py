"""The intake state machine: walks, wrong answers, crisis, persistence."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ecounsel.domain.intake import (
    AgeRefused,
    ConsentDeclined,
    ConsentGiven,
    CrisisDetected,
    InstrumentScored,
    InstrumentSpec,
    IntakeComplete,
    IntakeContext,
    IntakeState,
    InvalidState,
    Stage,
    Step,
    advance,
    begin_reconsent,
    needs_reconsent,
    pause,
    start,
    state_problems,
)
from e2ecounsel.domain.screening import Band
from e2ecounsel.policy import load_policy

PHQ9 = InstrumentSpec(
    "phq9",
    9,
    {8: 1},
    (Band("minimal", 0, 4), Band("mild", 5, 9), Band("moderate", 10, 14), Band("severe", 15, 27)),
)
GAD7 = InstrumentSpec("gad7", 7, {}, (Band("minimal", 0, 4), Band("more", 5, 21)))
CTX = IntakeContext(
    languages=("en", "id"),
    min_age=18,
    instruments=(PHQ9, GAD7),
    countries=("ID", "MY", "SG"),
    topics=("anxiety", "career", "relationships"),
    counselor_options=("@ani:example.org", "@bob:example.org"),
    max_chars=500,
    consent_version="sha256:aaa",
    vocabulary=load_policy().answer_words(),
)


def keys(step: Step) -> list[str]:
    return [r.key for r in step.replies]


def walk(inputs: list[str], ctx: IntakeContext = CTX) -> list[Step]:
    """Feed inputs one by one, checking validity and the JSON round trip at every step."""
    steps = [start(ctx)]
    for text in inputs:
        step = advance(steps[-1].state, text, ctx)
        assert state_problems(step.state, ctx) == []
        restored = IntakeState.from_dict(json.loads(json.dumps(step.state.to_dict())))
        assert restored == step.state
        steps.append(step)
    return steps


def events(steps: list[Step]) -> list[object]:
    return [e for s in steps for e in s.events]


# PHQ-9 item 9 answered 1: the intake pauses, and "now" goes on with GAD-7.
EN_WALK = ["1", "agree", "yes", "1", "Rani", *["1"] * 9, "now", *["2"] * 7, "2", "auto"]


def test_full_walk_in_english() -> None:
    steps = walk(EN_WALK)
    assert keys(steps[0]) == ["intake.welcome"]
    assert steps[0].replies[0].params == {"languages": ("en", "id")}
    assert keys(steps[1]) == ["intake.consent"]
    assert steps[1].replies[0].params == {"version": "sha256:aaa"}
    assert keys(steps[2]) == ["intake.age"]
    assert steps[2].replies[0].params == {"min_age": 18}
    assert keys(steps[3]) == ["intake.country"]
    assert steps[3].replies[0].params == {"options": ("ID", "MY", "SG"), "count": 3}
    assert keys(steps[4]) == ["intake.pseudonym"]
    assert keys(steps[5]) == ["intake.screening_intro", "intake.screening_item"]
    assert steps[5].replies[0].params == {
        "instrument": "phq9",
        "number": 1,
        "instruments": 2,
        "count": 9,
        "max_answer": 3,
    }
    assert steps[5].replies[1].params == {
        "instrument": "phq9",
        "item": 0,
        "index": 1,
        "count": 9,
        "max_answer": 3,
    }
    after_phq = steps[5 + 9]
    assert keys(after_phq) == ["intake.screening_result", "intake.paused"]
    assert after_phq.replies[0].params == {"instrument": "phq9", "score": 9, "severity": "mild"}
    assert CrisisDetected("screening:phq9:item9") in after_phq.events
    assert keys(steps[5 + 10]) == ["intake.screening_intro", "intake.screening_item"]
    after_gad = steps[5 + 10 + 7]
    assert keys(after_gad) == ["intake.screening_result", "intake.topic"]
    assert after_gad.replies[0].params == {"instrument": "gad7", "score": 14, "severity": "more"}
    assert after_gad.replies[1].params == {"options": CTX.topics, "count": 3}
    assert keys(steps[-2]) == ["intake.counselor"]
    assert steps[-2].replies[0].params == {"options": CTX.counselor_options, "count": 2}
    final = steps[-1]
    assert final.replies == ()
    assert final.events == (IntakeComplete(),)
    s = final.state
    assert s.step is Stage.DONE
    assert (s.language, s.consent_version, s.age_ok, s.country, s.pseudonym) == (
        "en",
        "sha256:aaa",
        True,
        "ID",
        "Rani",
    )
    assert s.answers == ((1,) * 9, (2,) * 7)
    assert (s.topic, s.counselor, s.crisis) == ("career", "auto", True)
    assert events(steps) == [
        ConsentGiven("sha256:aaa"),
        CrisisDetected("screening:phq9:item9"),
        InstrumentScored("phq9", 9, "mild"),
        InstrumentScored("gad7", 14, "more"),
        IntakeComplete(),
    ]


def test_full_walk_in_indonesian_with_local_words_and_sloppy_typing() -> None:
    inputs = ["2.", " SETUJU ", "Ya!", "id", "  Budi   Santoso ", *["0"] * 9, "lewati", "3", "!2"]
    steps = walk(inputs)
    s = steps[-1].state
    assert s.step is Stage.DONE
    assert (s.language, s.country, s.pseudonym) == ("id", "ID", "Budi Santoso")
    assert s.answers == ((0,) * 9, None)
    assert (s.topic, s.counselor, s.crisis) == ("relationships", "@bob:example.org", False)
    assert keys(steps[6 + 9]) == ["intake.screening_skipped", "intake.topic"]
    assert steps[6 + 9].replies[0].params == {"instrument": "gad7"}
    assert events(steps) == [
        ConsentGiven("sha256:aaa"),
        InstrumentScored("phq9", 0, "minimal"),
        IntakeComplete(),
    ]


# One wrong answer per step: the hint, then the question again, and the state unchanged.
WRONG = [
    (0, "3", ["intake.language_invalid"]),
    (1, "maybe", ["intake.consent_invalid"]),
    (2, "perhaps", ["intake.age_invalid", "intake.age"]),
    (3, "4", ["intake.country_invalid", "intake.country"]),
    (3, "0", ["intake.country_invalid", "intake.country"]),
    (4, "   ", ["intake.pseudonym_invalid", "intake.pseudonym"]),
    (4, "x" * 41, ["intake.pseudonym_invalid", "intake.pseudonym"]),
    (4, "\x1b[31m\x07", ["intake.pseudonym_invalid", "intake.pseudonym"]),
    (5, "4", ["intake.screening_invalid", "intake.screening_item"]),
    (7, "-1", ["intake.screening_invalid", "intake.screening_item"]),
    (8, "two", ["intake.screening_invalid", "intake.screening_item"]),
    (5 + 17, "9", ["intake.topic_invalid", "intake.topic"]),
    (5 + 18, "3", ["intake.counselor_invalid", "intake.counselor"]),
    (5 + 18, "anyone", ["intake.counselor_invalid", "intake.counselor"]),
]


@pytest.mark.parametrize(("at", "text", "expected"), WRONG)
def test_wrong_answer_keeps_state_and_hints(at: int, text: str, expected: list[str]) -> None:
    before = walk(EN_WALK[:at])[-1].state
    step = advance(before, text, CTX)
    assert step.state == before
    assert keys(step) == expected
    assert step.events == ()


def test_screening_hint_repeats_the_current_item() -> None:
    before = walk(EN_WALK[:8])[-1].state  # three PHQ-9 answers given
    step = advance(before, "7", CTX)
    assert step.replies[1].params["index"] == 4
    assert step.replies[0].params == {"instrument": "phq9", "max_answer": 3}


@pytest.mark.parametrize("at", range(len(EN_WALK)))
def test_too_long_changes_nothing(at: int) -> None:
    before = walk(EN_WALK[:at])[-1].state
    step = advance(before, "1" * 501, CTX)
    assert step.state == before
    assert [(r.key, r.params) for r in step.replies] == [("intake.too_long", {"max_chars": 500})]


def test_decline_keeps_nothing_and_a_later_message_starts_over() -> None:
    steps = walk(["2", "tolak"])
    assert keys(steps[-1]) == ["intake.consent_declined"]
    assert steps[-1].events == (ConsentDeclined(),)
    assert steps[-1].state == IntakeState(step=Stage.DECLINED, language="id")
    again = advance(steps[-1].state, "halo", CTX)
    assert again.state == IntakeState()
    assert keys(again) == ["intake.welcome"]


def test_under_age_is_refused() -> None:
    steps = walk(["1", "agree", "No"])
    assert keys(steps[-1]) == ["intake.age_refused"]
    assert steps[-1].replies[0].params == {"min_age": 18}
    assert steps[-1].events == (AgeRefused(),)
    assert steps[-1].state == IntakeState(step=Stage.AGE_REFUSED, language="en")


def test_phq9_item9_raises_crisis_at_once_and_the_intake_pauses() -> None:
    steps = walk(["1", "agree", "yes", "1", "Rani", *["0"] * 8, "2"])
    last = steps[-1]
    assert last.events[0] == CrisisDetected("screening:phq9:item9")
    assert last.state.crisis
    assert keys(last) == ["intake.screening_result", "intake.paused"]  # not GAD-7
    assert (last.state.step, last.state.resume) == (Stage.PAUSED, Stage.SCREENING)
    assert last.state.answers == ((0,) * 8 + (2,), ())


def test_a_paused_intake_waits_until_the_client_says_now() -> None:
    paused = walk(["1", "agree", "yes", "1", "Rani", *["0"] * 8, "2"])[-1].state
    for text, key in [("later", "intake.pause_later"), ("nanti aja", "intake.pause_later")]:
        step = advance(paused, text, CTX)
        assert (step.state, keys(step)) == (paused, [key])
    step = advance(paused, "I just feel so alone", CTX)
    assert (step.state, keys(step)) == (paused, ["intake.pause_waiting"])
    assert not needs_reconsent(paused, "sha256:changed")
    resumed = advance(paused, "Lanjut", CTX)
    assert keys(resumed) == ["intake.screening_intro", "intake.screening_item"]
    assert resumed.replies[0].params["instrument"] == "gad7"
    assert (resumed.state.step, resumed.state.resume) == (Stage.SCREENING, None)
    assert state_problems(resumed.state, CTX) == []


def test_item9_mid_instrument_pauses_and_resumes_at_the_next_item() -> None:
    spec = InstrumentSpec("phq9", 9, {3: 1}, PHQ9.bands)
    ctx = replace(CTX, instruments=(spec, GAD7))
    steps = walk(["1", "agree", "yes", "1", "Rani", "0", "0", "0", "3"], ctx)
    assert keys(steps[-1]) == ["intake.paused"]
    resumed = advance(steps[-1].state, "now", ctx)
    assert keys(resumed) == ["intake.screening_item"]
    assert resumed.replies[0].params["index"] == 5


def test_pause_after_a_crisis_message_and_not_before_consent() -> None:
    at_pseudonym = walk(["2", "setuju", "ya", "1"])[-1].state
    step = pause(at_pseudonym)
    assert keys(step) == ["intake.paused"]
    assert (step.state.step, step.state.resume, step.state.crisis) == (
        Stage.PAUSED,
        Stage.PSEUDONYM,
        True,
    )
    assert state_problems(step.state, CTX) == []
    assert pause(step.state) == Step(step.state)  # already paused: nothing more to say
    before_consent = walk(["1"])[-1].state
    assert pause(before_consent) == Step(before_consent)
    back = advance(step.state, "ya", CTX)
    assert keys(back) == ["intake.pseudonym"]


ZONES = {"ID": ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"), "MY": ("Asia/Kuala_Lumpur",)}


def test_a_country_with_several_zones_asks_which() -> None:
    ctx = replace(CTX, zones=ZONES)
    steps = walk(["1", "agree", "yes", "1"], ctx)
    assert keys(steps[-1]) == ["intake.zone"]
    assert steps[-1].replies[0].params == {"options": ZONES["ID"], "count": 3}
    wrong = advance(steps[-1].state, "7", ctx)
    assert (wrong.state, keys(wrong)) == (steps[-1].state, ["intake.zone_invalid", "intake.zone"])
    step = advance(steps[-1].state, "2", ctx)
    assert keys(step) == ["intake.pseudonym"]
    assert step.state.zone == "Asia/Makassar"
    assert IntakeState.from_dict(step.state.to_dict()) == step.state


def test_a_country_with_one_zone_or_none_is_not_asked() -> None:
    ctx = replace(CTX, zones=ZONES)
    malaysia = walk(["1", "agree", "yes", "2"], ctx)[-1]
    assert keys(malaysia) == ["intake.pseudonym"] and malaysia.state.zone == "Asia/Kuala_Lumpur"
    singapore = walk(["1", "agree", "yes", "3"], ctx)[-1]
    assert keys(singapore) == ["intake.pseudonym"] and singapore.state.zone is None


def test_a_state_saved_before_zones_still_loads() -> None:
    data = walk(["1", "agree", "yes", "1"])[-1].state.to_dict()
    del data["zone"]
    assert IntakeState.from_dict(data).zone is None


def test_a_zone_outside_the_country_is_a_problem() -> None:
    ctx = replace(CTX, zones=ZONES)
    state = walk(["1", "agree", "yes", "1", "1"], ctx)[-1].state
    assert state_problems(replace(state, zone="Europe/Paris"), ctx) == [
        "zone not among the country's"
    ]


def test_phq9_item9_zero_is_no_crisis() -> None:
    steps = walk(["1", "agree", "yes", "1", "Rani", *["3"] * 8, "0"])
    assert not any(isinstance(e, CrisisDetected) for e in events(steps))
    assert not steps[-1].state.crisis


def test_skip_all_screening() -> None:
    steps = walk(["1", "agree", "yes", "1", "Rani", "skip", "Skip."])
    assert steps[-1].state.step is Stage.TOPIC
    assert steps[-1].state.answers == (None, None)
    assert keys(steps[-2]) == [
        "intake.screening_skipped",
        "intake.screening_intro",
        "intake.screening_item",
    ]


def test_skip_mid_instrument_discards_partial_answers() -> None:
    steps = walk(["1", "agree", "yes", "1", "Rani", "3", "3", "skip"])
    assert steps[-1].state.answers == (None, ())
    assert steps[-1].state.instrument == 1


def test_pseudonym_is_cleaned() -> None:
    steps = walk(["1", "agree", "yes", "1", "\u202eRa\x1b[1mni\x00  \n K. "])
    assert steps[-1].state.pseudonym == "Rani K."


def test_counselor_number_means_what_was_offered() -> None:
    at_counselor = walk(EN_WALK[:-1])[-1].state
    shrunk = replace(CTX, counselor_options=("@bob:example.org",))
    step = advance(at_counselor, "1", shrunk)
    assert step.state.counselor == "@ani:example.org"


def test_no_counselor_offered_only_auto() -> None:
    ctx = replace(CTX, counselor_options=())
    steps = walk(EN_WALK[:-1], ctx)
    assert keys(steps[-1])[-1] == "intake.counselor_none"
    wrong = advance(steps[-1].state, "1", ctx)
    assert keys(wrong) == ["intake.counselor_invalid", "intake.counselor_none"]
    assert wrong.state == steps[-1].state
    done = advance(steps[-1].state, "otomatis", ctx)
    assert done.state.counselor == "auto"


def test_empty_policy_lists_skip_their_steps() -> None:
    ctx = replace(CTX, countries=(), instruments=(), topics=())
    steps = walk(["1", "agree", "yes", "Rani", "auto"], ctx)
    assert keys(steps[3]) == ["intake.pseudonym"]
    assert keys(steps[4]) == ["intake.counselor"]
    s = steps[-1].state
    assert (s.step, s.country, s.answers, s.topic) == (Stage.DONE, None, (), None)


def test_after_done_messages_are_not_intake() -> None:
    done = walk(EN_WALK)[-1].state
    step = advance(done, "1", CTX)
    assert step == Step(done)


def test_reconsent_interrupts_and_resumes_the_step() -> None:
    mid = walk(EN_WALK[:7])[-1].state  # two PHQ-9 answers
    assert not needs_reconsent(mid, "sha256:aaa")
    assert needs_reconsent(mid, "sha256:bbb")
    ctx = replace(CTX, consent_version="sha256:bbb")
    asked = begin_reconsent(mid, ctx)
    assert keys(asked) == ["intake.reconsent"]
    assert asked.replies[0].params == {"version": "sha256:bbb"}
    assert asked.state.step is Stage.RECONSENT
    assert state_problems(asked.state, ctx) == []
    assert IntakeState.from_dict(asked.state.to_dict()) == asked.state
    assert keys(advance(asked.state, "2", ctx)) == ["intake.consent_invalid"]
    resumed = advance(asked.state, "setuju", ctx)
    assert resumed.events == (ConsentGiven("sha256:bbb"),)
    assert resumed.state == replace(mid, consent_version="sha256:bbb")
    assert keys(resumed) == ["intake.screening_item"]
    assert resumed.replies[0].params["index"] == 3


def test_reconsent_after_done_and_decline() -> None:
    done = walk(EN_WALK)[-1].state
    ctx = replace(CTX, consent_version="v2")
    asked = begin_reconsent(done, ctx)
    assert advance(asked.state, "agree", ctx).state == replace(done, consent_version="v2")
    declined = advance(asked.state, "decline", ctx)
    assert declined.events == (ConsentDeclined(),)
    assert declined.state.step is Stage.DECLINED
    assert declined.state.pseudonym is None


def test_needs_reconsent_not_before_consent() -> None:
    assert not needs_reconsent(IntakeState(), "v2")
    assert not needs_reconsent(walk(["1"])[-1].state, "v2")
    assert begin_reconsent(IntakeState(), CTX) == Step(IntakeState())


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"format": 99},
        {**IntakeState().to_dict(), "step": "nowhere"},
        {**IntakeState().to_dict(), "age_ok": "yes"},
        {**IntakeState().to_dict(), "instrument": True},
        {**IntakeState().to_dict(), "pseudonym": "Rani"},  # pseudonym before its step
        {**IntakeState().to_dict(), "step": "screening"},  # screening without consent etc.
        {**IntakeState().to_dict(), "answers": "0123"},
    ],
)
def test_from_dict_rejects_malformed(data: dict[str, object]) -> None:
    with pytest.raises(InvalidState):
        IntakeState.from_dict(data)


# --- properties -------------------------------------------------------------------------------

PLAUSIBLE = st.sampled_from(
    [
        "1",
        "2",
        "3",
        "0",
        "agree",
        "setuju",
        "decline",
        "yes",
        "ya",
        "no",
        "tidak",
        "skip",
        "auto",
        "ID",
        "anxiety",
        "",
        "!",
        "x" * 600,
        "Rani",
        "\x1b]0;x\x07",
        "１",
    ]
)
INPUTS = st.lists(st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, st.text(max_size=60)), max_size=60)
CONTEXTS = st.sampled_from(
    [
        CTX,
        replace(CTX, counselor_options=()),
        replace(CTX, countries=(), topics=()),
        replace(CTX, instruments=(InstrumentSpec("one", 1, {0: 3}),)),
    ]
)


@settings(max_examples=300, deadline=None)
@given(INPUTS, CONTEXTS)
def test_machine_never_raises_and_state_stays_valid(inputs: list[str], ctx: IntakeContext) -> None:
    state = start(ctx).state
    for text in inputs:
        step = advance(state, text, ctx)
        assert state_problems(step.state, ctx) == []
        assert IntakeState.from_dict(json.loads(json.dumps(step.state.to_dict()))) == step.state
        if step.state == state and step.state.step not in (Stage.DONE,):
            assert step.replies, "an unchanged state always tells the client why"
        if any(isinstance(e, CrisisDetected) for e in step.events):
            assert step.state.crisis
        state = step.state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.one_of(PLAUSIBLE, st.text(max_size=20)), max_size=2), min_size=22))
def test_noise_between_good_answers_never_breaks_the_machine(noise: list[list[str]]) -> None:
    """Good answers interleaved with junk reach deep steps; junk must never corrupt the state."""
    state = start(CTX).state
    for good, junk in zip(EN_WALK, noise, strict=False):
        for text in [*junk, good]:
            step = advance(state, text, CTX)
            assert state_problems(step.state, CTX) == []
            assert IntakeState.from_dict(step.state.to_dict()) == step.state
            state = step.state
