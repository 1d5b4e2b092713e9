"""Booking: live sessions through chat (``book``, ``bookings``, ``cancel``, ``!book``)."""

from bridge.features.booking.flow import answer_in_session, commands

__all__ = ["answer_in_session", "commands"]
