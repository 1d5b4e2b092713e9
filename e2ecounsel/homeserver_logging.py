"""A logging filter that the embedded Synapse loads to keep registration tokens out of its log.

Synapse logs a token sign-up at INFO twice: the access log line of
``GET /_matrix/client/v1/register/m.login.registration_token/validity?token=…`` carries the
token in the query string (Synapse redacts only ``access_token`` and ``client_secret``), and
``synapse.handlers.auth`` writes ``Auth completed with creds: {'m.login.registration_token':
'…'}``. Anyone who reads the log could sign up with a token that has uses left.

This module is imported inside Synapse's process (``log.config`` names it), so it depends on
nothing but the standard library.
"""

from __future__ import annotations

import logging
import re
from typing import Final

REDACTED: Final = "<redacted>"

_PATTERNS: Final = (
    # ?token=… / &token=… in a logged URI.
    re.compile(r"(?<=[?&]token=)[^&\s\"']+"),
    # 'm.login.registration_token': '…' in a logged dict (repr of the completed UI-auth stages).
    re.compile(r"(?<=['\"]m\.login\.registration_token['\"]: ['\"])[^'\"]*"),
    # "token": "…" in a logged JSON body.
    re.compile(r"(?<=['\"]token['\"]: ['\"])[^'\"]*"),
)


def redact(text: str) -> str:
    """``text`` with every registration token replaced by ``<redacted>``."""
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class RedactRegistrationTokens(logging.Filter):
    """Rewrites each record's message without registration tokens; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True
