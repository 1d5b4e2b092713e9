"""Counselor matching and the waiting list."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from e2ecounsel.domain.matching import (
    CounselorLoad,
    MatchRequest,
    MatchWeights,
    WaitingClient,
    assign_from_waitlist,
    eligible,
    match,
    waitlist_order,
    waitlist_position,
)

LANGS = ["en", "id", "ms"]
TOPICS = ["anxiety", "career", "grief", "family"]


def counselor(
    cid: str,
    langs: str = "en,id",
    specs: str = "",
    capacity: int = 10,
    caseload: int = 0,
    on_call: bool = False,
    available: bool = True,
) -> CounselorLoad:
    return CounselorLoad(
        cid,
        frozenset(langs.split(",")),
        frozenset(filter(None, specs.split(","))),
        capacity,
        caseload,
        on_call,
        available,
    )


@st.composite
def counselors(draw: st.DrawFn) -> list[CounselorLoad]:
    ids = draw(st.lists(st.sampled_from([f"@c{i}:x" for i in range(12)]), unique=True))
    out = []
    for cid in ids:
        capacity = draw(st.integers(0, 5))
        out.append(
            CounselorLoad(
                cid,
                frozenset(draw(st.sets(st.sampled_from(LANGS), min_size=1))),
                frozenset(draw(st.sets(st.sampled_from(TOPICS)))),
                capacity,
                draw(st.integers(0, capacity + 1)),
                draw(st.booleans()),
                draw(st.booleans()),
            )
        )
    return out


requests = st.builds(
    MatchRequest,
    language=st.sampled_from(LANGS),
    topics=st.frozensets(st.sampled_from(TOPICS), max_size=2),
    preferred=st.one_of(st.none(), st.sampled_from([f"@c{i}:x" for i in range(12)])),
    crisis=st.booleans(),
)
weights = st.builds(
    MatchWeights, specialty=st.floats(0, 5, allow_nan=False), load=st.floats(0, 5, allow_nan=False)
)


@given(requests, counselors(), weights)
def test_match_respects_hard_rules(
    request: MatchRequest, roster: list[CounselorLoad], w: MatchWeights
) -> None:
    chosen = match(request, roster, w)
    by_id = {c.id: c for c in roster}
    if chosen is None:
        assert not any(eligible(request, c) for c in roster)
        return
    c = by_id[chosen]
    assert request.language in c.languages
    assert c.available
    assert c.caseload + 1 <= c.capacity


@given(requests, counselors(), weights, st.randoms(use_true_random=False))
def test_match_is_deterministic_under_permutation(
    request: MatchRequest, roster: list[CounselorLoad], w: MatchWeights, rnd: random.Random
) -> None:
    shuffled = list(roster)
    rnd.shuffle(shuffled)
    assert match(request, shuffled, w) == match(request, roster, w)


@given(requests, counselors())
def test_preferred_counselor_honoured_when_eligible(
    request: MatchRequest, roster: list[CounselorLoad]
) -> None:
    preferred = [c for c in roster if c.id == request.preferred and eligible(request, c)]
    if preferred:
        assert match(request, roster) == request.preferred


@given(requests, counselors())
def test_crisis_prefers_on_call(request: MatchRequest, roster: list[CounselorLoad]) -> None:
    crisis = MatchRequest(request.language, request.topics, None, crisis=True)
    chosen = match(crisis, roster)
    if any(c.on_call and eligible(crisis, c) for c in roster):
        assert chosen is not None
        assert {c.id: c for c in roster}[chosen].on_call


def test_specialty_then_load_then_id() -> None:
    roster = [
        counselor("@b:x", specs="career", caseload=5),
        counselor("@a:x", specs="anxiety", caseload=9),
        counselor("@c:x", specs="anxiety", caseload=2),
        counselor("@d:x", specs="anxiety", caseload=2),
    ]
    assert match(MatchRequest("en", frozenset({"anxiety"})), roster) == "@c:x"
    assert match(MatchRequest("en", frozenset({"career"})), roster) == "@b:x"
    assert match(MatchRequest("en"), roster) == "@c:x"  # least loaded, id breaks the tie


def test_relative_load_not_absolute() -> None:
    roster = [counselor("@a:x", capacity=4, caseload=2), counselor("@b:x", capacity=20, caseload=5)]
    assert match(MatchRequest("en"), roster) == "@b:x"


def test_never_over_capacity_or_wrong_language_or_unavailable() -> None:
    roster = [
        counselor("@full:x", capacity=3, caseload=3),
        counselor("@ms:x", langs="ms"),
        counselor("@away:x", available=False),
        counselor("@zero:x", capacity=0),
    ]
    assert match(MatchRequest("en"), roster) is None
    assert match(MatchRequest("en", preferred="@full:x"), roster) is None
    assert match(MatchRequest("ms"), roster) == "@ms:x"


def test_preferred_ignored_when_ineligible() -> None:
    roster = [counselor("@a:x", langs="id"), counselor("@b:x")]
    assert match(MatchRequest("en", preferred="@a:x"), roster) == "@b:x"


def test_crisis_on_call_beats_specialty() -> None:
    roster = [counselor("@a:x", specs="anxiety"), counselor("@z:x", on_call=True, caseload=9)]
    req = MatchRequest("en", frozenset({"anxiety"}), crisis=True)
    assert match(req, roster) == "@z:x"
    assert match(MatchRequest("en", frozenset({"anxiety"})), roster) == "@a:x"


T0 = datetime(2025, 3, 1, tzinfo=UTC)


def waiting(cid: str, minutes: int, lang: str = "en", crisis: bool = False) -> WaitingClient:
    return WaitingClient(cid, T0 + timedelta(minutes=minutes), MatchRequest(lang, crisis=crisis))


def test_waitlist_crisis_first_then_fifo() -> None:
    queue = [waiting("!c", 3), waiting("!a", 1), waiting("!crisis", 9, crisis=True)]
    assert [w.client_id for w in waitlist_order(queue)] == ["!crisis", "!a", "!c"]
    assert waitlist_position("!c", queue) == 3
    assert waitlist_position("!nobody", queue) is None


def test_assign_from_waitlist_uses_capacity_once() -> None:
    queue = [waiting("!1", 1), waiting("!2", 2), waiting("!ms", 0, lang="ms"), waiting("!3", 3)]
    roster = [counselor("@a:x", capacity=2, caseload=1), counselor("@b:x", capacity=1)]
    pairs = assign_from_waitlist(queue, roster)
    assert pairs == [("!1", "@b:x"), ("!2", "@a:x")]  # least relative load first


@given(
    st.lists(
        st.builds(
            WaitingClient,
            client_id=st.uuids().map(str),
            since=st.datetimes(timezones=st.just(UTC)),
            request=requests,
        ),
        max_size=15,
    ),
    counselors(),
)
def test_waitlist_assignment_never_exceeds_capacity(
    queue: list[WaitingClient], roster: list[CounselorLoad]
) -> None:
    pairs = assign_from_waitlist(queue, roster)
    by_id = {c.id: c for c in roster}
    requests_by_client = {w.client_id: w.request for w in queue}
    added: dict[str, int] = {}
    for client, cid in pairs:
        added[cid] = added.get(cid, 0) + 1
        assert requests_by_client[client].language in by_id[cid].languages
    for cid, extra in added.items():
        c = by_id[cid]
        assert c.available and c.caseload + extra <= c.capacity
    assert len({client for client, _ in pairs}) == len(pairs)


def test_prefer_on_call_can_be_switched_off_by_policy() -> None:
    on_call = CounselorLoad("@a:x", frozenset({"en"}), frozenset(), 5, 0, on_call=True)
    specialist = CounselorLoad("@b:x", frozenset({"en"}), frozenset({"grief"}), 5, 0)
    crisis = MatchRequest("en", frozenset({"grief"}), crisis=True)
    assert match(crisis, [on_call, specialist]) == "@a:x"
    no_pref = MatchRequest("en", frozenset({"grief"}), crisis=True, prefer_on_call=False)
    assert match(no_pref, [on_call, specialist]) == "@b:x"
