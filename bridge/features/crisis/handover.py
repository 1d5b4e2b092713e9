"""Crisis hand-over: ``!take P`` brings the person who answered a page to the client.

A page is useless if it leads to a room the paged person cannot enter. So the
page names a number, and whoever answers it first (an on-call counselor, the
client's own counselor, or a supervisor) is put in a room with the client: the
client's session room if they have one (invited, power 50), otherwise a new
encrypted room with the client, made for the purpose (during the intake or on
the waiting list). The client is told who joined, in their language; everyone
else who was paged is told that the page is taken, and by whom.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from bridge.kernel import rooms
from bridge.kernel.effects import Effects, command_reply
from bridge.persistence.inbox import InboxItem
from bridge.persistence.pages import Page
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import parse_number
from e2ecounsel.errors import MatrixError

if TYPE_CHECKING:
    from bridge.kernel.context import Context

logger = logging.getLogger(__name__)

#: The taker's power level in the client's room: a counselor's.
TAKER_POWER = 50


async def cmd_take(
    ctx: Context, fx: Effects, item: InboxItem, args: str, *, reply_room: str, lang: str
) -> None:
    """``!take [P]``: answer page P (or the newest open page)."""

    def reply(key: str, *, ok: bool, page: Page | None = None, **params: object) -> None:
        fact = command_reply("take", ok, page.engagement_id if page else None)
        fx.say(reply_room, ctx.render.text(lang, key, **params), case=fact)

    taker = item.sender
    if args.strip():
        number = parse_number(args.split()[0])
        page = await ctx.pages.get(number) if number is not None else None
    else:
        page = await ctx.pages.newest_open()
    if page is None:
        reply("take.unknown", ok=False)
        return
    if not await may_take(ctx, taker, page):
        reply("not_allowed", ok=False, page=page)
        return
    if page.taken_by is not None and page.taken_by != taker:
        reply(
            "take.already",
            ok=False,
            page=page,
            page_id=page.id,
            name=await name_of(ctx, page.taken_by),
        )
        return
    if page.taken_by is None and not await ctx.pages.take(page.id, taker):
        fresh = await ctx.pages.get(page.id)
        by = fresh.taken_by if fresh and fresh.taken_by else "?"
        reply("take.already", ok=False, page=page, page_id=page.id, name=await name_of(ctx, by))
        return
    if page.taken_by == taker and page.room_id is not None:
        # Taken already, by this person: say where, change nothing.
        reply(
            "take.done",
            ok=True,
            page=page,
            page_id=page.id,
            room_link=rooms.room_link(page.room_id),
        )
        return
    client = await ctx.store.get_client(page.client_id)
    if client is None:
        reply("take.gone", ok=False, page=page, page_id=page.id)
        return
    name = await name_of(ctx, taker)
    clang = ctx.lang_of(client)
    eng = await ctx.store.current_engagement(client.user_id)
    if page.room_id is not None:
        room_id = page.room_id  # a replay: the room is there already
    elif eng is not None and eng.status == "active" and eng.room_id:
        room_id = eng.room_id
        if taker != eng.counselor_id:
            await _invite(ctx, room_id, taker)
        await ctx.pages.set_room(page.id, room_id)
    else:
        body = rooms.session_room_body(
            name=ctx.render.text(clang, "session.room_name"),
            counselor=taker,
            client=client.user_id,
        )
        room_id = await ctx.ensure_room(f"page:{page.id}", taker, body)
        await ctx.pages.set_room(page.id, room_id)
    new_room = not (eng is not None and eng.room_id == room_id)
    fx.write(ctx.audit_fn(taker, "page.take", page.engagement_id, detail=str(page.id)))
    country = client.profile.get("country")
    if new_room:
        fx.say(
            room_id,
            ctx.render.text(
                clang,
                "take.room_intro",
                name=name,
                crisis_line=ctx.policy.crisis_line(clang, country),
            ),
            reader=client.user_id,
        )
        if client.dm_room_id:
            fx.say(client.dm_room_id, ctx.render.text(clang, "take.client_invited", name=name))
    elif eng is None or taker != eng.counselor_id:
        fx.say(room_id, ctx.render.text(clang, "take.client_joined", name=name))
    else:  # their own counselor: already in the room, and now answering the page
        fx.say(room_id, ctx.render.text(clang, "take.counselor_here", name=name))
    taken = CaseEvent("take", page.engagement_id, room_id, {"page": page.id, "by": taker})
    fx.say(
        reply_room,
        ctx.render.text(lang, "take.done", page_id=page.id, room_link=rooms.room_link(room_id)),
        case=taken,
    )
    await _tell_others(ctx, fx, page, taker, name, taken, skip=reply_room)


async def may_take(ctx: Context, user_id: str, page: Page) -> bool:
    """On-call counselors, the client's own counselor and supervisors answer pages."""
    if await ctx.pages.is_supervisor(user_id):
        return True
    counselor = await ctx.store.get_counselor(user_id)
    if counselor is None or not counselor.active:
        return False
    if counselor.on_call:
        return True
    eng = await ctx.store.get_engagement(page.engagement_id) if page.engagement_id else None
    return eng is not None and eng.counselor_id == user_id


async def name_of(ctx: Context, user_id: str) -> str:
    counselor = await ctx.store.get_counselor(user_id)
    if counselor is not None:
        return counselor.name
    supervisor = await ctx.pages.supervisor(user_id)
    return supervisor.name if supervisor is not None else user_id


async def _invite(ctx: Context, room_id: str, user_id: str) -> None:
    """Invite ``user_id`` to ``room_id`` with a counselor's power (idempotent)."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels"
    status, levels = await ctx.matrix.raw("GET", path)
    if status == 200 and isinstance(levels, dict):
        users = dict(levels.get("users") or {})
        if users.get(user_id) != TAKER_POWER:
            users[user_id] = TAKER_POWER
            status, _ = await ctx.matrix.raw("PUT", path, {**levels, "users": users})
            if status != 200:
                logger.warning("raising the power of a taker in %s failed: %s", room_id, status)
    try:
        await rooms.invite(ctx.matrix, room_id, user_id)
    except MatrixError as exc:
        logger.info("inviting a taker to %s: %s (already a member?)", room_id, exc.errcode)


async def _tell_others(
    ctx: Context, fx: Effects, page: Page, taker: str, name: str, taken: CaseEvent, *, skip: str
) -> None:
    """Everyone else who was paged learns the page is taken, and by whom."""
    targets = [c for c in await ctx.store.list_counselors(active_only=True) if c.on_call]
    eng = await ctx.store.get_engagement(page.engagement_id) if page.engagement_id else None
    if eng is not None and eng.counselor_id:
        own = await ctx.store.get_counselor(eng.counselor_id)
        if own is not None:
            targets.append(own)
    seen = {skip}
    for c in targets:
        if c.case_room_id is None or c.case_room_id in seen or c.user_id == taker:
            continue
        seen.add(c.case_room_id)
        fx.say(
            c.case_room_id,
            ctx.render.text(ctx.counselor_lang(c), "page.taken", page_id=page.id, name=name),
            reader=c.user_id,
            case=taken,
        )
    room = ctx.live.supervisors_room
    if room is not None and room not in seen:
        lang = ctx.policy.service.default_language
        fx.say(room, ctx.render.text(lang, "page.taken", page_id=page.id, name=name), case=taken)
