"""Intake: the greeting and the conversation in a client's DM (consent, age, screening,
topic, counselor choice) up to the placement."""

from bridge.features.intake.flow import on_dm_message, on_joined

__all__ = ["on_dm_message", "on_joined"]
