"""Placement: matching, the session room and the brief, the waiting list, and moving a
client to another counselor (``switch``, ``!refer``, ``!reassign``, a roster change)."""

from bridge.features.placement.commands import commands, rematch_orphans
from bridge.features.placement.placing import (
    drain_waitlist,
    follow_drain,
    follow_place,
    follow_retire,
    follow_switch,
    follow_waitlisted,
)

commands.follow_up("place")(follow_place)
commands.follow_up("switch")(follow_switch)
commands.follow_up("waitlisted")(follow_waitlisted)
commands.follow_up("retire")(follow_retire)
commands.follow_up("drain")(follow_drain)

__all__ = ["commands", "drain_waitlist", "rematch_orphans"]
