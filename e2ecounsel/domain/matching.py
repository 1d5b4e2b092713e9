"""Choosing a counselor for a client, and serving the waiting list.

Rules, in order: a counselor must be available, speak the client's language and have capacity left
(never over capacity); a preferred counselor who passes those checks is chosen; in a crisis an
on-call counselor is preferred; then the best weighted mix of specialty overlap and low relative
load; the counselor id breaks ties so the same situation always gives the same answer, whatever the
order the roster was read in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class CounselorLoad:
    """A counselor as matching sees them: what they offer and how full they are.

    ``caseload`` counts active (not dormant) engagements; ``available`` is false for counselors who
    are away or removed.
    """

    id: str
    languages: frozenset[str]
    specialties: frozenset[str]
    capacity: int
    caseload: int
    on_call: bool = False
    available: bool = True

    @property
    def has_room(self) -> bool:
        """Whether one more client keeps the counselor within capacity."""
        return self.available and self.capacity > 0 and self.caseload < self.capacity


@dataclass(frozen=True)
class MatchRequest:
    """What a client needs: ``topics`` are the specialties wanted (usually their intake topic)."""

    language: str
    topics: frozenset[str] = frozenset()
    preferred: str | None = None
    crisis: bool = False
    #: In a crisis, rank on-call counselors first (policy ``prefer_in_crisis``).
    #: A crisis always puts the client first on the waiting list either way.
    prefer_on_call: bool = True


@dataclass(frozen=True)
class MatchWeights:
    """Policy weights. With the defaults one matching specialty outweighs any load difference."""

    specialty: float = 1.0
    load: float = 0.5


DEFAULT_WEIGHTS = MatchWeights()


def eligible(request: MatchRequest, counselor: CounselorLoad) -> bool:
    """Hard requirements: available, speaks the language, capacity left."""
    return counselor.has_room and request.language in counselor.languages


def _rank(
    request: MatchRequest, c: CounselorLoad, weights: MatchWeights
) -> tuple[bool, float, str]:
    overlap = len(request.topics & c.specialties) / len(request.topics) if request.topics else 0.0
    load = c.caseload / c.capacity
    value = weights.specialty * overlap - weights.load * load
    # Sorted ascending: crisis on-call first, then the highest value, then the smallest id.
    on_call_first = request.crisis and request.prefer_on_call and c.on_call
    return (not on_call_first, -value, c.id)


def match(
    request: MatchRequest,
    counselors: Iterable[CounselorLoad],
    weights: MatchWeights = DEFAULT_WEIGHTS,
) -> str | None:
    """Id of the counselor to assign, or ``None`` when nobody eligible has room (waitlist)."""
    candidates = [c for c in counselors if eligible(request, c)]
    if not candidates:
        return None
    if request.preferred is not None:
        for c in candidates:
            if c.id == request.preferred:
                return c.id
    return min(candidates, key=lambda c: _rank(request, c, weights)).id


# -------------------------------------------------------------------------------------- waitlist


@dataclass(frozen=True)
class WaitingClient:
    """A client on the waiting list; ``since`` is when they joined it (UTC)."""

    client_id: str
    since: datetime
    request: MatchRequest


def waitlist_order(waiting: Iterable[WaitingClient]) -> list[WaitingClient]:
    """Crisis first, then first come first served; the id makes equal times deterministic."""
    return sorted(waiting, key=lambda w: (not w.request.crisis, w.since, w.client_id))


def waitlist_position(client_id: str, waiting: Iterable[WaitingClient]) -> int | None:
    """1-based position of ``client_id`` in the served order, ``None`` if not waiting."""
    for position, w in enumerate(waitlist_order(waiting), start=1):
        if w.client_id == client_id:
            return position
    return None


def assign_from_waitlist(
    waiting: Iterable[WaitingClient],
    counselors: Sequence[CounselorLoad],
    weights: MatchWeights = DEFAULT_WEIGHTS,
) -> list[tuple[str, str]]:
    """(client, counselor) pairs for everyone who can be served now, in waitlist order.

    Each assignment counts against the counselor's capacity before the next client is matched. A
    client nobody can serve (e.g. their language) stays waiting without blocking those behind them.
    """
    loads = {c.id: c for c in counselors}
    pairs: list[tuple[str, str]] = []
    for w in waitlist_order(waiting):
        chosen = match(w.request, loads.values(), weights)
        if chosen is None:
            continue
        pairs.append((w.client_id, chosen))
        loads[chosen] = replace(loads[chosen], caseload=loads[chosen].caseload + 1)
    return pairs
