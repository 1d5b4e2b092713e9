"""What a handler decides, before it is committed: the Effects of one step, with the
outbox markers, the message format and transaction ids."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.kernel import markup
from bridge.kernel.work import FollowUp
from bridge.persistence.store import ABOUT
from e2ecounsel.casechannel import CaseEvent, attach

OUTCOMES = {
    "resolved": "resolved",
    "face-to-face": "face_to_face",
    "continue": "continue",
    "refer": "refer",
}
RISKS = ("high", "medium", "low")
#: Outbox marker for the one message allowed in clear: "this room is not encrypted".
PLAINTEXT_OK = "org.e2ecounsel.plaintext_ok"
#: Outbox marker: hold this message (and the room's later ones) until this user has joined.
#: The bot's rooms keep history from the invitation on, and nio shares room keys with
#: invited members too, but only with the devices they have when the message is sent: a
#: counselor's first device may not exist yet when they are invited. A message held until
#: the join goes out when the joining device exists, so it can always be decrypted.
AWAIT_JOIN = "org.e2ecounsel.await_join"


def command_reply(
    command: str, ok: bool, engagement: int | None = None, room: str | None = None
) -> CaseEvent:
    """The case-channel fact on the bot's answer to a counselor's or supervisor's command."""
    return CaseEvent("reply", engagement, room, {"command": command, "ok": ok})


def message_content(body: str, *, mention: str | None = None) -> dict[str, Any]:
    """An ``m.text`` event for ``body``: a plain body, HTML when the text has markdown.

    ``m.text`` rather than ``m.notice``: Element mutes notices by default, and
    these are messages people need to notice. Every message carries
    ``m.mentions`` (empty unless it is meant for ``mention``), so that no app
    guesses mentions from the text.
    """
    content: dict[str, Any] = {"msgtype": "m.text", "body": markup.to_plain(body)}
    if markup.has_markup(body):
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = markup.to_html(body)
    content["m.mentions"] = {"user_ids": [mention]} if mention else {}
    return content


def txn_id(cause: str, index: int) -> str:
    """Deterministic transaction id: the same cause always yields the same ids."""
    digest = hashlib.sha256(f"{cause}\x00{index}".encode()).hexdigest()[:40]
    return f"e2c.{digest}"


@dataclass
class Effects:
    """What one handler decided: messages to queue, state writes, durable follow-ups."""

    cause: str
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    writes: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    follow_ups: list[FollowUp] = field(default_factory=list)

    def say(
        self,
        room_id: str,
        body: str,
        *,
        plaintext_ok: bool = False,
        reader: str | None = None,
        about: str | None = None,
        case: CaseEvent | None = None,
        mention: str | None = None,
        parts: bool = False,
    ) -> None:
        """Queue ``body`` for ``room_id``; with ``reader``, only once they have joined.

        ``about`` names the client a message in someone else's room concerns
        (a brief), so that erasing the client redacts it there too. ``case`` is the
        machine-readable fact a case-channel message carries for the counselor app.
        ``mention`` makes it an intentional mention of that person (pages and
        reminders meant for one person notify them even in a muted room). With
        ``parts``, a long text goes out as several messages a phone screen holds,
        the case fact (if any) on the last one.
        """
        pieces = markup.split_parts(body) if parts else [body]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            content = message_content(piece, mention=mention)
            if plaintext_ok:
                content[PLAINTEXT_OK] = True
            if reader is not None:
                content[AWAIT_JOIN] = reader
            if about is not None:
                content[ABOUT] = about
            if case is not None and last:
                attach(content, case)
            self.messages.append((room_id, content))

    def write(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self.writes.append(fn)

    def follow(self, kind: str, **payload: Any) -> None:
        """Leave a durable follow-up ``kind`` (JSON ``payload``), committed with the step.

        Its key derives from the cause and its place in the step, so a step
        replayed after a crash records nothing twice (hashed: any database takes
        it as text, whatever the cause holds).
        """
        seed = f"{self.cause}\x00{len(self.follow_ups)}\x00{kind}"
        key = "fu." + hashlib.sha256(seed.encode()).hexdigest()[:40]
        self.follow_ups.append(FollowUp(kind, payload, key))
