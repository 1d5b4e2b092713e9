"""Cadence: reply rounds made visible and kept (digests, reminders, escalations, booking
reminders, retention), as durable jobs."""

from bridge.features.cadence.cadence import (
    Cadence,
    follow_sla,
    on_booked,
    on_cancelled,
    plan_digest,
)
from bridge.kernel.commands import Commands

commands = Commands()
commands.follow_up("sla")(follow_sla)

__all__ = ["Cadence", "commands", "on_booked", "on_cancelled", "plan_digest"]
