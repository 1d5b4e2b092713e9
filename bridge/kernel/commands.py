"""The command registry: every command, every answer to a bot's question and every
follow-up, registered by the feature that owns it, with one event type for all.

A feature declares what it handles on its own :class:`Commands`::

    commands = Commands()

    @commands.command(CLIENT, "status", always=True)
    async def status(ev: CommandEvent) -> None: ...

    @commands.answer("erase")          # the client answers the question "erase?"
    async def confirm_erase(ev: CommandEvent) -> None: ...

    @commands.follow_up("place")       # a durable follow-up of some step
    async def place(ctx: Context, payload: dict[str, Any]) -> None: ...

The code knows command ids only. The words people type, their aliases and the
one-line help come from ``policies/<lang>/commands.toml`` (see
:class:`e2ecounsel.policy.Vocabulary`): a word is looked up in the person's
language first and then in the others, so a client writing "status" in the
Indonesian service is understood too. ``help`` is generated from the
registry and those texts, so it lists exactly the commands that exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.kernel.effects import Effects, command_reply
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord, Counselor, Engagement
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import normalize_command
from e2ecounsel.policy import Audience, Policy

if TYPE_CHECKING:
    from bridge.kernel.context import Context

CLIENT: Audience = "client"
COUNSELOR: Audience = "counselor"
SUPERVISOR: Audience = "supervisor"


@dataclass(frozen=True)
class CommandEvent:
    """One command (or one answer to a question the bot asked), whoever sent it.

    ``reply_room`` is where the answer goes: the client's DM, the counselor's
    case channel (also for a ``!`` line typed in a session room), the
    supervisors' room. ``eng`` is the case a counselor's command is about.
    ``pending`` is the open question an answer answers.
    """

    ctx: Context
    fx: Effects
    item: InboxItem
    command: str
    args: str
    lang: str
    reply_room: str
    audience: Audience = "client"
    client: ClientRecord | None = None
    counselor: Counselor | None = None
    eng: Engagement | None = None
    pending: Mapping[str, Any] | None = None
    #: The whole line, cleaned (an answer may be free text: a survey comment).
    text: str = ""

    @property
    def answer(self) -> str:
        """The first word of the line, folded (``"Yes!"`` -> ``"yes"``)."""
        return normalize_command(self.text)[0]

    def the_client(self) -> ClientRecord:
        """The client (a client's command or answer always has one)."""
        if self.client is None:
            raise LookupError(f"{self.command} needs a client")
        return self.client

    def the_case(self) -> tuple[Engagement, Counselor]:
        """The case and its counselor (a counselor's case command always has both)."""
        if self.eng is None or self.counselor is None:
            raise LookupError(f"{self.command} needs a case")
        return self.eng, self.counselor

    def say(self, key: str, **params: object) -> None:
        """Answer with the text ``key`` in the sender's language."""
        self.fx.say(self.reply_room, self.ctx.render.text(self.lang, key, **params))

    def reply(
        self, key: str, *, ok: bool = True, fact: CaseEvent | None = None, **params: object
    ) -> None:
        """Answer a counselor or supervisor, with the machine-readable reply their app reads.

        ``fact`` replaces the plain "reply" when the answer states a change the
        app tracks (the case closed, the client handed over).
        """
        self.reply_text(self.ctx.render.text(self.lang, key, **params), ok=ok, fact=fact)

    def reply_text(self, body: str, *, ok: bool = True, fact: CaseEvent | None = None) -> None:
        """:meth:`reply` with a text already rendered."""
        eng = self.eng
        self.fx.say(
            self.reply_room,
            body,
            reader=self.counselor.user_id if self.counselor else None,
            case=fact
            or command_reply(
                self.command, ok, eng.id if eng else None, eng.room_id if eng else None
            ),
        )


Handler = Callable[[CommandEvent], Awaitable[None]]
FollowUpHandler = Callable[["Context", dict[str, Any]], Awaitable[None]]
#: A part of the client's ``status`` answer (their bookings, say); "" adds nothing.
StatusPart = Callable[["Context", ClientRecord], Awaitable[str]]


@dataclass(frozen=True)
class Command:
    audience: Audience
    id: str
    handler: Handler
    #: Works also while the bot waits for an answer, and in the middle of the intake
    #: (a pending question never swallows a cry for help or an erasure request).
    always: bool = False
    #: A counselor's command about one case: by its number in the case channel, for the
    #: room's case when typed in a session room.
    case: bool = False
    #: A counselor's command that works in a session room too without naming a case (help).
    in_session: bool = False
    #: Open questions (pending kinds) this command answers when typed with arguments
    #: (``book 2`` while times are on offer books time 2).
    answers: frozenset[str] = frozenset()


@dataclass
class Commands:
    """What one feature handles. The router gathers every feature's into a :class:`Registry`."""

    commands: list[Command] = field(default_factory=list)
    answers: dict[str, Handler] = field(default_factory=dict)
    follow_ups: dict[str, FollowUpHandler] = field(default_factory=dict)
    status_parts: list[StatusPart] = field(default_factory=list)

    def command(
        self,
        audience: Audience,
        command_id: str,
        *,
        always: bool = False,
        case: bool = False,
        in_session: bool = False,
        answers: Iterable[str] = (),
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.commands.append(
                Command(audience, command_id, fn, always, case, in_session, frozenset(answers))
            )
            return fn

        return register

    def answer(self, kind: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.answers[kind] = fn
            return fn

        return register

    def follow_up(self, kind: str) -> Callable[[FollowUpHandler], FollowUpHandler]:
        def register(fn: FollowUpHandler) -> FollowUpHandler:
            self.follow_ups[kind] = fn
            return fn

        return register

    def status_part(self, fn: StatusPart) -> StatusPart:
        self.status_parts.append(fn)
        return fn


class DuplicateRegistration(ValueError):
    """Two features registered the same command, answer or follow-up."""


class Registry:
    """Every feature's commands, answers and follow-ups; looked up by the words of a language."""

    def __init__(self, parts: Iterable[Commands]) -> None:
        self.commands: dict[tuple[Audience, str], Command] = {}
        self.answers: dict[str, Handler] = {}
        self.follow_ups: dict[str, FollowUpHandler] = {}
        self.status_parts: list[StatusPart] = []
        for part in parts:
            for c in part.commands:
                _add(self.commands, (c.audience, c.id), c)
            for kind, handler in part.answers.items():
                _add(self.answers, kind, handler)
            for kind, follow in part.follow_ups.items():
                _add(self.follow_ups, kind, follow)
            self.status_parts.extend(part.status_parts)

    def ids(self, audience: Audience) -> set[str]:
        return {cid for (aud, cid) in self.commands if aud == audience}

    def find(self, ctx: Context, audience: Audience, word: str, lang: str) -> Command | None:
        """The command ``word`` names, in ``lang`` first, then in the other languages."""
        command_id = ctx.policy.command(word, audience, lang)
        return self.commands.get((audience, command_id)) if command_id is not None else None

    def help_text(self, policy: Policy, audience: Audience, lang: str) -> str:
        """The list of ``audience``'s commands with their one-line help, in file order."""
        vocabulary = policy.vocabulary(lang)
        lines = []
        prefix = "" if audience == CLIENT else "!"
        for command_id in vocabulary.commands(audience):
            if (audience, command_id) not in self.commands:
                continue
            word = vocabulary.words(command_id, audience)[0]
            args = vocabulary.args(command_id, audience)
            shown = f"{prefix}{word} {args}".rstrip()
            lines.append(
                policy.text(
                    lang, "help.line", command=shown, help=vocabulary.help(command_id, audience)
                )
            )
        return policy.text(lang, f"help.{audience}", commands="\n".join(lines))


def _add(table: dict[Any, Any], key: object, value: object) -> None:
    if key in table:
        raise DuplicateRegistration(f"registered twice: {key!r}")
    table[key] = value
