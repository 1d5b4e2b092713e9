"""Status: where things stand for the client, the counselor's cases, and help."""

from bridge.features.status.commands import commands

__all__ = ["commands"]
