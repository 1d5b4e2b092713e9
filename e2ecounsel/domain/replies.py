"""What the domain asks the bot to say, without saying it.

The domain never holds user-visible text (that lives in ``policies/<lang>/messages.toml``). It
returns a message key plus the parameters the template needs; the bridge renders it in the
client's language.
Keeping the parameters raw (option ids, numbers) lets the bridge localise lists and labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    """One message to send: ``key`` into the message catalog, ``params`` for ``str.format_map``."""

    key: str
    params: Mapping[str, object] = field(default_factory=dict)
