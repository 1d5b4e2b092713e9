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

from bridge import rooms
from bridge.effects import Effects, command_reply
from bridge.persistence.inbox import InboxItem
from bridge.persistence.pages import Page
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.domain.text import parse_number
from e2ecounsel.errors import MatrixError
from e2ecounsel.matrix import check

if TYPE_CHECKING:
    from bridge.engine import Engine

logger = logging.getLogger(__name__)

#: The taker's power level in the client's room: a counselor's.
TAKER_POWER = 50


async def cmd_take(
    engine: Engine, fx: Effects, item: InboxItem, args: str, *, reply_room: str, lang: str
) -> None:
    """``!take [P]``: answer page P (or the newest open page)."""

    def reply(key: str, *, ok: bool, page: Page | None = None, **params: object) -> None:
        fact = command_reply("take", ok, page.engagement_id if page else None)
        fx.say(reply_room, engine.render.text(lang, key, **params), case=fact)

    taker = item.sender
    if args.strip():
        number = parse_number(args.split()[0])
        page = await engine.pages.get(number) if number is not None else None
    else:
        page = await engine.pages.newest_open()
    if page is None:
        reply("take.unknown", ok=False)
        return
    if not await may_take(engine, taker, page):
        reply("not_allowed", ok=False, page=page)
        return
    if page.taken_by is not None and page.taken_by != taker:
        reply(
            "take.already",
            ok=False,
            page=page,
            page_id=page.id,
            name=await name_of(engine, page.taken_by),
        )
        return
    if page.taken_by is None and not await engine.pages.take(page.id, taker):
        fresh = await engine.pages.get(page.id)
        by = fresh.taken_by if fresh and fresh.taken_by else "?"
        reply("take.already", ok=False, page=page, page_id=page.id, name=await name_of(engine, by))
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
    client = await engine.store.get_client(page.client_id)
    if client is None:
        reply("take.gone", ok=False, page=page, page_id=page.id)
        return
    name = await name_of(engine, taker)
    clang = engine.lang_of(client)
    eng = await engine.store.current_engagement(client.user_id)
    if page.room_id is not None:
        room_id = page.room_id  # a replay: the room is there already
    elif eng is not None and eng.status == "active" and eng.room_id:
        room_id = eng.room_id
        if taker != eng.counselor_id:
            await _invite(engine, room_id, taker)
        await engine.pages.set_room(page.id, room_id)
    else:
        body = rooms.session_room_body(
            name=engine.render.text(clang, "session.room_name"),
            counselor=taker,
            client=client.user_id,
        )
        room_id = await engine.ensure_room(f"page:{page.id}", taker, body)
        await engine.pages.set_room(page.id, room_id)
    new_room = not (eng is not None and eng.room_id == room_id)
    fx.write(engine.audit_fn(taker, "page.take", page.engagement_id, detail=str(page.id)))
    country = client.profile.get("country")
    if new_room:
        fx.say(
            room_id,
            engine.render.text(
                clang,
                "take.room_intro",
                name=name,
                crisis_line=engine.policy.crisis_line(clang, country),
            ),
            reader=client.user_id,
        )
        if client.dm_room_id:
            fx.say(client.dm_room_id, engine.render.text(clang, "take.client_invited", name=name))
    elif eng is None or taker != eng.counselor_id:
        fx.say(room_id, engine.render.text(clang, "take.client_joined", name=name))
    else:  # their own counselor: already in the room, and now answering the page
        fx.say(room_id, engine.render.text(clang, "take.counselor_here", name=name))
    taken = CaseEvent("take", page.engagement_id, room_id, {"page": page.id, "by": taker})
    fx.say(
        reply_room,
        engine.render.text(lang, "take.done", page_id=page.id, room_link=rooms.room_link(room_id)),
        case=taken,
    )
    await _tell_others(engine, fx, page, taker, name, taken, skip=reply_room)


async def may_take(engine: Engine, user_id: str, page: Page) -> bool:
    """On-call counselors, the client's own counselor and supervisors answer pages."""
    if await engine.pages.is_supervisor(user_id):
        return True
    counselor = await engine.store.get_counselor(user_id)
    if counselor is None or not counselor.active:
        return False
    if counselor.on_call:
        return True
    eng = await engine.store.get_engagement(page.engagement_id) if page.engagement_id else None
    return eng is not None and eng.counselor_id == user_id


async def name_of(engine: Engine, user_id: str) -> str:
    counselor = await engine.store.get_counselor(user_id)
    if counselor is not None:
        return counselor.name
    supervisor = await engine.pages.supervisor(user_id)
    return supervisor.name if supervisor is not None else user_id


async def _invite(engine: Engine, room_id: str, user_id: str) -> None:
    """Invite ``user_id`` to ``room_id`` with a counselor's power (idempotent)."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels"
    status, levels = await engine.session.raw("GET", path)
    if status == 200 and isinstance(levels, dict):
        users = dict(levels.get("users") or {})
        if users.get(user_id) != TAKER_POWER:
            users[user_id] = TAKER_POWER
            status, _ = await engine.session.raw("PUT", path, {**levels, "users": users})
            if status != 200:
                logger.warning("raising the power of a taker in %s failed: %s", room_id, status)
    try:
        check(await engine.session.client.room_invite(room_id, user_id), "inviting a taker")
    except MatrixError as exc:
        logger.info("inviting a taker to %s: %s (already a member?)", room_id, exc.errcode)


async def _tell_others(
    engine: Engine, fx: Effects, page: Page, taker: str, name: str, taken: CaseEvent, *, skip: str
) -> None:
    """Everyone else who was paged learns the page is taken, and by whom."""
    targets = [c for c in await engine.store.list_counselors(active_only=True) if c.on_call]
    eng = await engine.store.get_engagement(page.engagement_id) if page.engagement_id else None
    if eng is not None and eng.counselor_id:
        own = await engine.store.get_counselor(eng.counselor_id)
        if own is not None:
            targets.append(own)
    seen = {skip}
    for c in targets:
        if c.case_room_id is None or c.case_room_id in seen or c.user_id == taker:
            continue
        seen.add(c.case_room_id)
        fx.say(
            c.case_room_id,
            engine.render.text(engine.counselor_lang(c), "page.taken", page_id=page.id, name=name),
            reader=c.user_id,
            case=taken,
        )
    room = engine.supervisors_room
    if room is not None and room not in seen:
        lang = engine.policy.service.default_language
        fx.say(room, engine.render.text(lang, "page.taken", page_id=page.id, name=name), case=taken)
