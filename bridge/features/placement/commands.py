"""Placement's commands: the client's ``switch`` (with their choice and whether the new
counselor may read their intake summary) and the supervisors' ``!reassign``; and the
re-match of clients whose counselor left the roster."""

from __future__ import annotations

import logging
from dataclasses import replace

from bridge.features.placement.placing import switch
from bridge.kernel.commands import CLIENT, SUPERVISOR, CommandEvent, Commands
from bridge.kernel.context import Context
from bridge.kernel.effects import Effects
from bridge.persistence.store import ClientRecord
from e2ecounsel.domain import matching
from e2ecounsel.domain.text import parse_number

logger = logging.getLogger(__name__)

commands = Commands()


@commands.command(CLIENT, "switch")
async def cmd_switch(ev: CommandEvent) -> None:
    """The client asks for another counselor: the ones who have room, to choose from."""
    ctx, fx, client, item, lang = ev.ctx, ev.fx, ev.the_client(), ev.item, ev.lang
    eng = await ctx.store.current_engagement(client.user_id)
    if eng is None or eng.status != "active":
        fx.say(item.room_id, ctx.render.text(lang, "switch.none"))
        return
    loads = await ctx.counselor_loads(exclude={eng.counselor_id or ""})
    req = ctx.match_request(client)
    offer = [c.id for c in loads if matching.eligible(req, c)]
    if not offer:
        fx.say(item.room_id, ctx.render.text(lang, "switch.none"))
        return
    counselors = {c.user_id: c for c in await ctx.store.list_counselors(active_only=True)}
    rec = replace(client, pending={"kind": "switch", "offer": offer})
    fx.write(lambda: ctx.store.save_client(rec))
    fx.say(
        item.room_id,
        ctx.render.text(
            lang,
            "switch.choose",
            options=ctx.render.profiles(lang, [counselors[i] for i in offer]),
        ),
    )


@commands.answer("switch")
async def answer_switch(ev: CommandEvent) -> None:
    """The counselor the client picked (a number, or ``auto``), or ``no``."""
    ctx, client, answer = ev.ctx, ev.the_client(), ev.answer
    cleared = replace(client, pending=None)
    offer = list((ev.pending or {}).get("offer", []))
    if ctx.means(answer, "no"):
        ev.fx.write(lambda: ctx.store.save_client(cleared))
        ev.say("switch.cancelled")
        return
    if ctx.means(answer, "auto"):
        target_id = await _best_other(ctx, client)
    else:
        pick = (parse_number(answer) or 0) - 1
        if not 0 <= pick < len(offer):
            ev.say("switch.invalid", count=len(offer))
            return
        target_id = offer[pick]
    target = await ctx.store.get_counselor(target_id or "")
    if target is None or not target.active:
        ev.fx.write(lambda: ctx.store.save_client(cleared))
        ev.say("switch.none")
        return
    rec = replace(client, pending={"kind": "switch_brief", "target": target.user_id})
    ev.fx.write(lambda: ctx.store.save_client(rec))
    ev.say("switch.brief_consent", counselor_name=target.name)


@commands.answer("switch_brief")
async def answer_switch_brief(ev: CommandEvent) -> None:
    """Whether the new counselor may read the intake summary; then the move."""
    ctx, client, answer = ev.ctx, ev.the_client(), ev.answer
    yes, no = ctx.means(answer, "yes"), ctx.means(answer, "no")
    if not yes and not no:
        ev.say("switch.brief_invalid")
        return
    cleared = replace(client, pending=None)
    ev.fx.write(lambda: ctx.store.save_client(cleared))
    ev.fx.follow(
        "switch",
        client=client.user_id,
        target=str((ev.pending or {}).get("target")),
        share=yes,
        cause=ev.item.event_id,
        note_key="switch.done",
        old_notice_key="switch.counselor_notice",
    )


async def _best_other(ctx: Context, client: ClientRecord) -> str | None:
    """The counselor matching would pick for the client, other than their current one."""
    eng = await ctx.store.current_engagement(client.user_id)
    current = eng.counselor_id if eng and eng.counselor_id else ""
    return matching.match(
        ctx.match_request(client),
        await ctx.counselor_loads(exclude={current}),
        ctx.match_weights(),
    )


@commands.command(SUPERVISOR, "reassign")
async def cmd_reassign(ev: CommandEvent) -> None:
    """A supervisor moves a client to another counselor (by the session room's id)."""
    ctx, fx, args, item, lang = ev.ctx, ev.fx, ev.args, ev.item, ev.lang
    parts = args.split()
    if len(parts) != 2:
        fx.say(item.room_id, ctx.render.text(lang, "reassign.usage"))
        return
    room_id, target_id = parts
    eng = await ctx.store.engagement_by_room(room_id)
    if eng is None or eng.status != "active":
        fx.say(item.room_id, ctx.render.text(lang, "reassign.unknown_room"))
        return
    target = await ctx.store.get_counselor(target_id)
    if target is None or not target.active:
        fx.say(item.room_id, ctx.render.text(lang, "reassign.unknown_counselor"))
        return
    if eng.counselor_id == target_id:
        fx.say(item.room_id, ctx.render.text(lang, "reassign.done", counselor_name=target.name))
        return
    if not await ctx.has_room(target_id):
        fx.say(item.room_id, ctx.render.text(lang, "reassign.full", counselor_name=target.name))
        return
    client = await ctx.store.get_client(eng.client_id)
    if client is None:
        fx.say(item.room_id, ctx.render.text(lang, "reassign.unknown_room"))
        return
    fx.say(item.room_id, ctx.render.text(lang, "reassign.done", counselor_name=target.name))
    fx.write(ctx.audit_fn(item.sender, "engagement.reassign", eng.id))
    fx.follow(
        "switch",
        client=client.user_id,
        target=target_id,
        share=eng.share_brief,
        cause=item.event_id,
        note_key="counselor.rematched",
        old_notice_key="sla.reassigned_previous",
        incoming_key="sla.reassigned_counselor",
    )


async def rematch_orphans(ctx: Context) -> None:
    """Re-match active clients whose counselor was removed from the roster.

    Each client is told first, then moved like a switch (brief shared as
    before); when nobody is free they go on the waiting list. The cause is
    derived from the engagement, so a crash half-way repeats nothing.
    """
    active_ids = {c.user_id for c in await ctx.store.list_counselors(active_only=True)}
    for eng in await ctx.store.active_engagements():
        if eng.counselor_id is None or eng.counselor_id in active_ids:
            continue
        client = await ctx.store.get_client(eng.client_id)
        if client is None:
            continue
        cause = f"rematch:{eng.id}"
        fx = Effects(cause)
        if client.dm_room_id:
            fx.say(client.dm_room_id, ctx.render.text(ctx.lang_of(client), "counselor.removed"))
        await ctx.commit(fx, None)
        await switch(
            ctx,
            client,
            None,
            eng.share_brief,
            cause=cause,
            note_key="counselor.rematched",
            waitlist_key="counselor.removed_waitlisted",
        )
