"""Crisis: the triage of every client message, the protocol and its pages, and the
hand-over to whoever answers a page (``!take``)."""

from bridge.features.crisis.commands import commands
from bridge.features.crisis.protocol import crisis_protocol as protocol
from bridge.features.crisis.protocol import follow_page
from bridge.features.crisis.triage import screen

commands.follow_up("page")(follow_page)

__all__ = ["commands", "protocol", "screen"]
