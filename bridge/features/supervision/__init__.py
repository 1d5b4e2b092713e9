"""Supervision: the supervisors' room and what supervisors ask there."""

from bridge.features.supervision.room import commands, keep_supervisors_room

__all__ = ["commands", "keep_supervisors_room"]
