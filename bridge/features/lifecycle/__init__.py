"""Lifecycle: closing a case with its outcome and the client's survey, the risk level,
referral, erasure on request and the upkeep of a closed or left session room."""

from bridge.features.lifecycle.commands import commands
from bridge.features.lifecycle.erase import (
    erase,
    follow_erase_about,
    follow_erase_room,
    follow_lock,
    follow_reinvite,
)

commands.follow_up("erase.about")(follow_erase_about)
commands.follow_up("erase.room")(follow_erase_room)
commands.follow_up("lock")(follow_lock)
commands.follow_up("reinvite")(follow_reinvite)

__all__ = ["commands", "erase"]
