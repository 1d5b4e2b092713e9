"""From a line someone typed to the registered handler: the client's commands and
answers in their DM, a counselor's ``!`` commands in the case channel or a
session room, and the supervisors' commands.

Commands and the bot's answers to a counselor live in the counselor's case
channel (the bot's DM with them), never in the client's room. There a command
about a case names it by its number, the engagement id shown as "Case N"
(``!close 12 resolved``). A command typed into a session room (from Element,
say) by the room's counselor is carried out for that room's case, without the
number; the bot redacts it there and answers in the case channel only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bridge.kernel import rooms
from bridge.kernel.commands import (
    CLIENT,
    COUNSELOR,
    SUPERVISOR,
    Command,
    CommandEvent,
)
from bridge.kernel.effects import Effects, command_reply, txn_id
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord, Counselor, Engagement
from e2ecounsel.domain.text import clean_text, normalize_command, parse_number
from e2ecounsel.errors import MatrixError

if TYPE_CHECKING:
    from bridge.kernel.context import Context

logger = logging.getLogger(__name__)

#: A command is "!" and a word; more exclamation marks are just emphasis.
_COMMAND = re.compile(r"!\w")


# ------------------------------------------------------------------ clients


async def client_command(
    ctx: Context, fx: Effects, client: ClientRecord, text: str, item: InboxItem
) -> None:
    """A DM after the intake: the answer to an open question, or a command.

    Anything else is most likely a client chatting with the bot as if it
    were their counselor; the friendly list of commands (which also says
    where to write to the counselor) is the right answer to both.
    """
    word, args = normalize_command(text)
    lang = ctx.lang_of(client)
    command = ctx.commands.find(ctx, CLIENT, word, lang)
    if client.pending is not None and not interrupts(command, args, client.pending):
        await answer_pending(ctx, fx, client, client.pending, text, item)
        return
    if command is None:
        fx.say(item.room_id, ctx.render.text(lang, "unknown_command"))
        return
    await command.handler(
        CommandEvent(ctx, fx, item, command.id, args, lang, item.room_id, client=client, text=text)
    )


def interrupts(command: Command | None, args: str, pending: dict[str, Any]) -> bool:
    """True when a line is a command even though the bot waits for an answer.

    Only a bare command that works everywhere counts ("status", not "status is
    fine" typed as a survey comment), and one that answers the open question
    itself (``book 2`` while times are on offer).
    """
    if command is None:
        return False
    if command.always:
        return not args
    return pending.get("kind") in command.answers


def is_global(ctx: Context, client: ClientRecord | None, text: str) -> Command | None:
    """The command a bare line names if it works everywhere (``urgent``, ``erase`` ...)."""
    word, args = normalize_command(text)
    command = ctx.commands.find(ctx, CLIENT, word, ctx.lang_of(client))
    return command if command is not None and command.always and not args else None


async def answer_pending(
    ctx: Context,
    fx: Effects,
    client: ClientRecord,
    pending: dict[str, Any],
    text: str,
    item: InboxItem,
) -> None:
    """The client's answer to the question the bot asked, to the feature that asked it."""
    lang = ctx.lang_of(client)
    kind = str(pending.get("kind"))
    handler = ctx.commands.answers.get(kind)
    if handler is None:
        cleared = replace(client, pending=None)
        fx.write(lambda: ctx.store.save_client(cleared))
        fx.say(item.room_id, ctx.render.text(lang, "unknown_command"))
        return
    await handler(
        CommandEvent(
            ctx,
            fx,
            item,
            kind,
            normalize_command(text)[0],
            lang,
            item.room_id,
            client=client,
            pending=pending,
            text=text,
        )
    )


# ------------------------------------------------------------------ counselors


async def session_command(
    ctx: Context,
    fx: Effects,
    eng: Engagement,
    client: ClientRecord | None,
    item: InboxItem,
    text: str,
) -> None:
    """A ``!`` line in a session room.

    From the room's counselor: carried out for this room's engagement and
    answered in their case channel. The command itself is redacted in the
    session room: the client must not read clinical notes ("!close refer
    suspected psychosis") or their risk level, and redaction is the only way
    to take back what a counselor's own app already sent there (the bot has
    power 100, redacting needs 50). The client's app may have shown it for a
    moment; it does not keep it. From the client, a counselor command gets a
    polite refusal and changes nothing; any other ``!`` line is conversation.
    """
    if not _COMMAND.match(text):
        return  # "!!! what a week": conversation, not a command
    word, args = normalize_command(text)
    counselor = await ctx.store.get_counselor(item.sender)
    lang = ctx.counselor_lang(counselor) if counselor is not None else ctx.lang_of(client)
    command = ctx.commands.find(ctx, COUNSELOR, word, lang)
    if command is None:
        if item.sender == eng.counselor_id:
            await _redact(ctx, item)
            if counselor is not None:
                room = await ctx.case_room(counselor)
                ev = _counselor_event(ctx, fx, item, word, args, room, counselor, eng, client)
                ev.reply("unknown_command_counselor", ok=False)
        return
    if item.sender != eng.counselor_id or counselor is None or eng.status != "active":
        if item.sender != eng.client_id:
            await _redact(ctx, item)  # a colleague's note is no more for the client
        if item.sender == eng.client_id:
            fx.say(item.room_id, ctx.render.text(ctx.lang_of(client), "not_allowed"))
        return
    await _redact(ctx, item)
    room = await ctx.case_room(counselor)
    ev = _counselor_event(ctx, fx, item, command.id, args, room, counselor, eng, client)
    if not (command.case or command.in_session):
        ev.reply("case.in_case_channel", ok=False)
        return
    await command.handler(ev)


async def case_message(ctx: Context, item: InboxItem) -> None:
    """A message in a counselor's case channel: a command, about a case by its number."""
    fx = Effects(item.event_id)
    counselor = await ctx.store.counselor_by_case_room(item.room_id)
    if counselor is None or item.sender != counselor.user_id or item.kind != "text":
        await ctx.commit(fx, item.event_id)
        return
    text = clean_text(item.body, ctx.max_chars)
    if not text.startswith("!"):
        await ctx.commit(fx, item.event_id)
        return
    word, args = normalize_command(text)
    lang = ctx.counselor_lang(counselor)
    room = item.room_id
    command = ctx.commands.find(ctx, COUNSELOR, word, lang)
    if command is None:
        fx.say(
            room,
            ctx.render.text(lang, "unknown_command_counselor"),
            case=command_reply(word, False),
        )
    elif not command.case:
        await command.handler(
            _counselor_event(ctx, fx, item, command.id, args, room, counselor, None, None)
        )
    else:
        number_text, _, rest = args.partition(" ")
        number = parse_number(number_text)
        eng = await ctx.store.get_engagement(number) if number is not None else None
        ev = _counselor_event(ctx, fx, item, command.id, rest.strip(), room, counselor, None, None)
        if number is None:
            ev.reply("case.number_needed", ok=False, command=word)
        elif eng is None or eng.counselor_id != counselor.user_id or eng.status != "active":
            ev.reply("case.unknown", ok=False, number=number)
        else:
            client = await ctx.store.get_client(eng.client_id)
            await command.handler(replace(ev, eng=eng, client=client))
    await ctx.commit(fx, item.event_id)


def _counselor_event(
    ctx: Context,
    fx: Effects,
    item: InboxItem,
    command: str,
    args: str,
    room: str,
    counselor: Counselor,
    eng: Engagement | None,
    client: ClientRecord | None,
) -> CommandEvent:
    return CommandEvent(
        ctx,
        fx,
        item,
        command,
        args,
        ctx.counselor_lang(counselor),
        room,
        audience=COUNSELOR,
        client=client,
        counselor=counselor,
        eng=eng,
    )


async def _redact(ctx: Context, item: InboxItem) -> None:
    """Take a command out of the session room (done again harmlessly on a replay)."""
    try:
        await rooms.redact(
            ctx.matrix, item.room_id, item.event_id, txn_id(f"redact:{item.event_id}", 0)
        )
    except MatrixError as exc:
        logger.warning("redacting a command in %s failed: %s", item.room_id, exc.errcode)


# ------------------------------------------------------------------ supervisors


async def supervisor_message(ctx: Context, item: InboxItem) -> None:
    """A ``!`` command in the supervisors' room, from someone on the supervisors' list.

    Being in the room is not enough: a configured room may hold others, and
    whoever an alias pointed at is nobody's supervisor.
    """
    fx = Effects(item.event_id)
    lang = ctx.policy.service.default_language
    if item.kind == "text" and item.sender != ctx.bot and item.body.startswith("!"):
        word, args = normalize_command(clean_text(item.body, ctx.max_chars))
        command = ctx.commands.find(ctx, SUPERVISOR, word, lang)
        if not await ctx.pages.is_supervisor(item.sender):
            fx.say(item.room_id, ctx.render.text(lang, "not_allowed"))
        elif command is None:
            fx.say(item.room_id, ctx.commands.help_text(ctx.policy, SUPERVISOR, lang))
        else:
            await command.handler(
                CommandEvent(
                    ctx, fx, item, command.id, args, lang, item.room_id, audience=SUPERVISOR
                )
            )
    await ctx.commit(fx, item.event_id)
