"""Counselor commands: what the app sends to the bot, and where.

Commands go only to the counselor's case channel, never into a client's session
room, and name the case by its number (``engagement`` in the case channel)::

    !close N resolved|face-to-face|continue|refer [note]    !risk N high|medium|low
    !refer N @colleague:server    !book N    !take P    !cases    !help

A line starting with ``!`` typed in the composer of a client's thread is taken as
a command *for that client's case*: the number is filled in, so ``!risk medium`` in
case 12's thread goes to the case channel as ``!risk 12 medium``. Anything that is
not a known command is refused with a hint and stays in the composer: the bot takes
every ``!`` line in a session room as a command, so such a line could never reach the
client anyway, and a message meant for the client must not vanish into the case
channel either.
"""

from __future__ import annotations

from e2ecounsel.casechannel import RISKS
from e2ecounsel.errors import CommandError

#: The outcome words of ``!close`` (the case channel's ids spell face_to_face).
CLOSE_WORDS = ("resolved", "face-to-face", "continue", "refer")
#: Commands about one case: the case number comes first.
CASE_COMMANDS = ("close", "risk", "refer", "book")
#: Commands of the case channel itself.
CHANNEL_COMMANDS = ("take", "cases", "help")

HINT = (
    "Commands: !close, !risk, !refer, !book (for this client), !take P, !cases, !help. "
    "A message to the client must not start with “!”."
)


class CommandRefused(CommandError):
    """The command was not sent; the text says why (shown to the counselor)."""


def is_command(body: str) -> bool:
    return body.lstrip().startswith("!")


def needs_case(body: str) -> bool:
    """Whether a ``!`` line acts on one client's case (so a thread must be open)."""
    word = body.strip()[1:].split(" ", 1)[0].lower()
    return word not in CHANNEL_COMMANDS


def for_case(word: str, engagement: int | None, *args: str) -> str:
    """``for_case("risk", 12, "high")`` → ``"!risk 12 high"``."""
    if engagement is None:
        raise CommandRefused(
            "This client's case number is not known yet (no brief from the service). "
            "Try again once the brief has arrived."
        )
    return " ".join(("!" + word, str(engagement), *args))


def route(body: str, engagement: int | None) -> str:
    """The case-channel command for a ``!`` line typed in a client's thread.

    Raises :class:`CommandRefused` (nothing is sent) for an unknown command, a
    missing or wrong argument, or a case number other than this thread's.
    """
    head, _, tail = body.strip()[1:].partition(" ")
    word = head.lower()
    rest = tail.strip()
    if word in CHANNEL_COMMANDS:
        if word == "take" and not rest.split(" ", 1)[0].isdigit():
            raise CommandRefused("Say which page: !take P (or press t on the page in the queue).")
        return f"!{word} {rest}".strip()
    if word not in CASE_COMMANDS:
        raise CommandRefused(f"Not sent: “!{head[:20]}” is no command. {HINT}")
    first, _, after = rest.partition(" ")
    if first.isdigit():
        if engagement is not None and int(first) != engagement:
            raise CommandRefused(
                f"Not sent: this is the thread of case {engagement}, the command names case "
                f"{int(first)}. Leave the number out to act on this client."
            )
        rest = after.strip()
    arg = rest.split(" ", 1)[0].lower() if rest else ""
    if word == "close" and arg not in CLOSE_WORDS:
        raise CommandRefused("Close with one of: " + ", ".join(CLOSE_WORDS) + " (then a note).")
    if word == "risk" and arg not in RISKS:
        raise CommandRefused("Risk is one of: " + ", ".join(RISKS) + ".")
    if word == "refer" and not (arg.startswith("@") and ":" in arg):
        raise CommandRefused("Refer to a colleague's Matrix ID: !refer @name:server")
    if word in ("close", "risk"):
        rest = arg + rest[len(arg) :]
    return for_case(word, engagement, *([rest] if rest else []))
