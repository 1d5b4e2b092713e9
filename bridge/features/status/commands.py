"""Where things stand: the client's ``status``, ``counselors`` and ``language``, the
counselor's ``!cases``, and ``help`` for everyone (generated from the registry)."""

from __future__ import annotations

import logging
from dataclasses import replace

from bridge.kernel.commands import CLIENT, COUNSELOR, SUPERVISOR, CommandEvent, Commands
from bridge.kernel.context import Context
from bridge.kernel.effects import command_reply
from bridge.kernel.timefmt import client_zone, when, windows_of
from bridge.persistence.store import ClientRecord, Counselor
from e2ecounsel.domain.cadence import next_window
from e2ecounsel.domain.text import parse_number

logger = logging.getLogger(__name__)

commands = Commands()


@commands.command(CLIENT, "help", always=True)
@commands.command(COUNSELOR, "help", in_session=True)
@commands.command(SUPERVISOR, "help")
async def cmd_help(ev: CommandEvent) -> None:
    """The commands of whoever asks, with their one-line help."""
    text = ev.ctx.commands.help_text(ev.ctx.policy, ev.audience, ev.lang)
    if ev.audience == CLIENT:
        ev.fx.say(ev.reply_room, text)
    else:
        ev.reply_text(text)


@commands.command(CLIENT, "status", always=True)
async def cmd_status(ev: CommandEvent) -> None:
    ctx, client = ev.ctx, ev.the_client()
    eng = await ctx.store.current_engagement(client.user_id)
    if eng is None:
        ev.say("status.none")
        return
    if eng.status == "waiting":
        waiting = [e.client_id for e in await ctx.store.waiting()]
        pos = waiting.index(client.user_id) + 1 if client.user_id in waiting else 1
        ev.say("status.waitlisted", position=pos)
        return
    counselor = await ctx.store.get_counselor(eng.counselor_id or "")
    if counselor is None:
        ev.say("status.none")
        return
    parts = [
        ctx.render.text(
            ev.lang,
            "status.active",
            counselor_name=counselor.name,
            credentials=counselor.credentials,
        )
    ]
    due = await next_window_text(ctx, counselor, client)
    key = "status.awaiting" if eng.awaiting_since else "status.not_awaiting"
    parts.append(ctx.render.text(ev.lang, key, next_window=due))
    for part in ctx.commands.status_parts:
        text = await part(ctx, client)
        if text:
            parts.append(text)
    ev.fx.say(ev.reply_room, "\n".join(parts))


async def next_window_text(ctx: Context, counselor: Counselor, client: ClientRecord) -> str:
    """The counselor's next reply window, in the client's zone, days off honoured."""
    _, days_off = await ctx.bookings.schedule_of(counselor.user_id)
    try:
        nxt = next_window(ctx.clock(), windows_of(counselor, days_off))
    except ValueError:
        return "?"
    if nxt is None:
        return "?"
    return when(nxt, client_zone(client, counselor))


@commands.command(CLIENT, "counselors")
async def cmd_counselors(ev: CommandEvent) -> None:
    ctx = ev.ctx
    counselors = await ctx.store.list_counselors(active_only=True)
    if not counselors:
        ev.say("counselors.none")
        return
    ev.say("counselors.list", options=ctx.render.profiles(ev.lang, counselors))


@commands.command(CLIENT, "language")
async def cmd_language(ev: CommandEvent) -> None:
    rec = replace(ev.the_client(), pending={"kind": "language"})
    ev.fx.write(lambda: ev.ctx.store.save_client(rec))
    ev.say("language.choose")


@commands.answer("language")
async def answer_language(ev: CommandEvent) -> None:
    ctx, client = ev.ctx, ev.the_client()
    langs = ctx.policy.languages
    pick = (parse_number(ev.answer) or 0) - 1
    if 0 <= pick < len(langs):
        new = replace(client, pending=None, language=langs[pick])
        ev.fx.write(lambda: ctx.store.save_client(new))
        ev.fx.say(ev.reply_room, ctx.render.text(langs[pick], "language.changed"))
    else:
        ev.say("language.invalid")


@commands.command(COUNSELOR, "cases")
async def cmd_cases(ev: CommandEvent) -> None:
    """The counselor's active clients, with their case numbers."""
    ctx, lang = ev.ctx, ev.lang
    assert ev.counselor is not None
    active = await ctx.store.active_for_counselor(ev.counselor.user_id)
    if not active:
        body = ctx.render.text(lang, "case.none")
    else:
        lines = []
        for eng in active:
            client = await ctx.store.get_client(eng.client_id)
            shared = eng.share_brief and client is not None
            pseudonym = str(client.profile.get("pseudonym") or "?") if shared and client else "—"
            key = "case.line_awaiting" if eng.awaiting_since else "case.line"
            lines.append(
                ctx.render.text(
                    lang,
                    key,
                    number=eng.id,
                    pseudonym=pseudonym,
                    risk=ctx.render.text(lang, f"risk.{eng.risk}"),
                )
            )
        body = ctx.render.text(lang, "case.list", cases="\n".join(lines))
    ev.fx.say(ev.reply_room, body, case=command_reply("cases", True))
