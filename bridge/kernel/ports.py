"""What one feature may ask of another, as typed ports.

Features never import each other (an import-linter contract holds them to
it). Most of their cooperation needs no call at all: a step records a named
follow-up (``fx.follow("place", ...)``) that the owning feature registered, a
command is found in the registry, a pending answer goes to the feature that
asked the question. What must happen inside the same step goes through these
ports: the crisis protocol (a crisis can surface in any conversation), the
erasure (also when a changed consent is declined during the intake), and the
reminders a booking or an assignment plans. The router hands the features'
implementations in when it builds the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bridge.kernel.effects import Effects
from bridge.persistence.bookings import Booking
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord, Counselor, Engagement

if TYPE_CHECKING:
    from bridge.kernel.context import Context


#: The client-profile key where the crisis triage notes a declined check ("check:no"),
#: which the counselor's brief shows.
CRISIS_FLAG = "crisis_flag"


@dataclass(frozen=True)
class Screened:
    """A message the crisis triage handled: the client as now saved, and what happened
    (``protocol``, ``check`` asked, ``answered`` no, or ``ack`` while a crisis or a check is
    open)."""

    client: ClientRecord
    kind: str


class Crisis(Protocol):
    async def screen(
        self,
        ctx: Context,
        fx: Effects,
        client: ClientRecord,
        text: str,
        *,
        room: str,
        where: str,
        remember: bool = False,
    ) -> Screened | None:
        """Handle ``text`` if it is a crisis matter or the answer to an open check question."""
        ...

    async def protocol(
        self,
        ctx: Context,
        fx: Effects,
        client: ClientRecord,
        reason: str,
        *,
        reply_room: str,
        remember: bool = False,
    ) -> Engagement | None:
        """The crisis reply at once, risk high, pages to on-call and supervisors."""
        ...


class Lifecycle(Protocol):
    async def erase(self, ctx: Context, fx: Effects, client: ClientRecord, item: InboxItem) -> None:
        """Delete what is stored about the client, redact, remove the counselor, leave."""
        ...


class Cadence(Protocol):
    async def plan_digest(self, ctx: Context, counselor: Counselor, now: datetime) -> None:
        """The counselor's next digest of who is waiting."""
        ...

    async def on_booked(
        self, ctx: Context, booking: Booking, eng: Engagement, counselor: Counselor
    ) -> None:
        """Reminders to both sides before a booked session, and a note when it starts."""
        ...

    async def on_cancelled(self, ctx: Context, booking_id: int) -> None:
        """Drop a cancelled booking's reminders."""
        ...


@dataclass(frozen=True)
class Features:
    """The features' implementations of the ports above."""

    crisis: Crisis
    lifecycle: Lifecycle
    cadence: Cadence
