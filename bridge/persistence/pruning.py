"""Pruning of operational rows: what the bridge needed to work, not what it must keep.

Handled inbox rows, sent outbox rows (they hold sealed copies of the bot's
messages), finished jobs and done follow-ups are deleted once they are older
than ``[retention] operational_days`` (policy, 14 by default). Pending work is
never pruned: an unhandled inbox row, an unsent message, a pending job, a
pending or failed follow-up stays until it is done (a failed follow-up waits
for an operator).

Idempotence survives pruning. Every pruned row that stood for "this was done
once" leaves its id in ``handled_events`` (an inbox row its event id, a job
``job:<key>``, a follow-up ``followup:<key>``): a compact marker of an id and
a time, nothing else. The inbox, the jobs and the follow-ups refuse an id that
has a marker, so an event delivered again after its row was pruned is not
handled twice, and a job or follow-up planned again is not run twice.

Markers are kept much longer than the rows, :data:`MARKERS_KEPT` (a year,
never less than the operational age), and this is why that is enough: events
come back only through the sync stream, whose position is saved after the
callbacks of each batch and never moves back. A crash replays at most the
last batch (seconds old), and the back-fill of a gap stops at the saved
position. An older event can only come again if the bot's saved sync
position is lost (a new initial sync shows each room's latest events, however
old); the markers cover that for a year. The bot's old messages stay
redactable after pruning: their room, event id and subject move to
``sent_log`` (see :meth:`~bridge.persistence.store.BridgeStore.purge_sent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bridge.persistence.inbox import Inbox
from bridge.persistence.jobs import Jobs
from bridge.persistence.store import BridgeStore

#: How long a marker of a pruned row is kept (see the module docstring).
MARKERS_KEPT = timedelta(days=365)


@dataclass(frozen=True)
class Pruned:
    """How many rows of each kind one pruning removed."""

    inbox: int
    outbox: int
    jobs: int
    followups: int
    markers: int


async def prune_operational(
    store: BridgeStore, inbox: Inbox, jobs: Jobs, *, operational_days: int
) -> Pruned:
    """Delete operational rows older than ``operational_days``, then markers past their time.

    Each table is pruned against the clock its times were written with.
    """
    age = timedelta(days=operational_days)
    return Pruned(
        inbox=await inbox.prune(age),
        outbox=await store.purge_sent(age),
        jobs=await jobs.prune(age),
        followups=await store.purge_followups(age),
        markers=await store.purge_handled(max(MARKERS_KEPT, age)),
    )
