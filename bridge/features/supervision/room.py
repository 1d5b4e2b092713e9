"""The supervisors' room: made once and kept in line with the list of supervisors, and
its commands ``!queue`` and ``!oncall``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from bridge.kernel import rooms
from bridge.kernel.commands import SUPERVISOR, CommandEvent, Commands
from bridge.kernel.effects import (
    Effects,
)
from e2ecounsel.domain.cadence import format_wait
from e2ecounsel.errors import MatrixError

if TYPE_CHECKING:
    from bridge.kernel.context import Context

logger = logging.getLogger(__name__)

commands = Commands()


# ------------------------------------------------------------------ supervisors


async def keep_supervisors_room(ctx: Context, *, manage: bool = True) -> None:
    """Create (once) the supervisors' room and keep its members in line with the list.

    Runs from the periodic upkeep, so ``e2ecounsel supervisor add/remove``
    takes effect while the bridge runs. The room's id is kept in the database
    (``rooms``, kind ``supervisors``); a room is made only when there is none.
    Supervisors missing from the room are invited; with ``manage`` (the room
    is the bridge's own, not one the operator configured) people who are no
    longer supervisors are removed. The member list is read only when the
    list of supervisors changed since the last look.
    """
    people = frozenset(s.user_id for s in await ctx.pages.supervisors())
    room = ctx.live.supervisors_room
    if room is None:
        if not people:
            return
        lang = ctx.policy.service.default_language
        body = rooms.private_room_body(
            name=ctx.render.text(lang, "supervisors.room_name"),
            invite=sorted(people),
            direct=False,
        )
        room = await ctx.ensure_room("supervisors", ctx.bot, body)
        await ctx.store.set_room(room, "supervisors", None)
        ctx.live.supervisors_room = room
        fx = Effects(f"supervisors-welcome:{room}")
        # History is readable from the join on: the welcome waits for the first to join.
        fx.say(room, ctx.render.text(lang, "supervisors.welcome"), reader=min(people))
        await ctx.commit(fx, None)
        ctx.live.synced_supervisors[room] = people
        logger.info("created the supervisors' room %s for %d supervisor(s)", room, len(people))
        return
    if ctx.live.synced_supervisors.get(room) == people:
        return
    status, body = await ctx.matrix.raw("GET", f"/_matrix/client/v3/rooms/{quote(room)}/members")
    if status != 200 or not isinstance(body, dict):
        logger.warning("reading the supervisors' room members failed: %s", status)
        return
    members = {
        str(e.get("state_key")): str((e.get("content") or {}).get("membership"))
        for e in body.get("chunk", [])
        if isinstance(e, dict)
    }
    present = {u for u, m in members.items() if m in ("join", "invite")}
    for user_id in sorted(people - present):
        try:
            await rooms.invite(ctx.matrix, room, user_id)
        except MatrixError as exc:
            logger.warning("inviting a supervisor failed: %s", exc.errcode)
            return
    if manage:
        for user_id in sorted(present - people - {ctx.bot}):
            try:
                await rooms.kick(ctx.matrix, room, user_id, known_member=True)
            except MatrixError as exc:
                logger.warning("removing a former supervisor failed: %s", exc.errcode)
                return
    ctx.live.synced_supervisors[room] = people


@commands.command(SUPERVISOR, "queue")
async def cmd_queue(ev: CommandEvent) -> None:
    """Who waits, for how long, and how many are at high risk."""
    ctx, fx, item, lang = ev.ctx, ev.fx, ev.item, ev.lang
    now_ms = int(ctx.clock().timestamp() * 1000)
    active = await ctx.store.active_engagements()
    awaiting = [e for e in active if e.awaiting_since]
    waiting = await ctx.store.waiting()
    oldest = max((now_ms - (e.awaiting_since or now_ms) for e in awaiting), default=0)
    oldest_wl = max(
        (ctx.clock() - datetime.fromisoformat(e.opened_at) for e in waiting), default=None
    )
    fx.say(
        item.room_id,
        ctx.render.text(
            lang,
            "queue.summary",
            awaiting=len(awaiting),
            oldest_wait=format_wait(oldest),
            waitlisted=len(waiting),
            oldest_waitlist=format_wait(int(oldest_wl.total_seconds() * 1000))
            if oldest_wl
            else "-",
            high_risk=sum(1 for e in active + waiting if e.risk == "high"),
        ),
    )


@commands.command(SUPERVISOR, "oncall")
async def cmd_oncall(ev: CommandEvent) -> None:
    """Who is on call now."""
    ctx, fx, item, lang = ev.ctx, ev.fx, ev.item, ev.lang
    names = [c.name for c in await ctx.store.list_counselors(active_only=True) if c.on_call]
    if names:
        fx.say(item.room_id, ctx.render.text(lang, "oncall.list", names=", ".join(names)))
    else:
        fx.say(item.room_id, ctx.render.text(lang, "oncall.none"))


# ------------------------------------------------------------------ roster upkeep
