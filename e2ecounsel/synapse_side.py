"""Code the embedded Synapse loads into its own process (named in its configuration files).

It depends on nothing but the standard library and Twisted (which Synapse brings).

``RedactRegistrationTokens`` keeps registration tokens out of Synapse's log. Synapse logs a
token sign-up at INFO twice: the access log line of
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
from typing import Any, Final

from twisted.web.resource import Resource
from twisted.web.server import Request

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


class AdminApiNotServedHere(Resource):
    """Answers every ``/_synapse/admin/…`` request on the client listener as an unknown path."""

    isLeaf = True

    def __init__(self, config: Any, module_api: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"application/json")  # type: ignore[no-untyped-call]
        return b'{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}'
