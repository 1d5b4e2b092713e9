"""Erasure on request, and the upkeep of a session room's doors: a closed room
locked read-only, a client who left invited back."""

from __future__ import annotations

import logging
from typing import Any

from bridge.kernel import rooms
from bridge.kernel.context import Context
from bridge.kernel.effects import Effects, txn_id
from bridge.kernel.work import Retry
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import ClientRecord
from e2ecounsel.casechannel import CaseEvent

logger = logging.getLogger(__name__)


async def erase(ctx: Context, fx: Effects, client: ClientRecord, item: InboxItem) -> None:
    """Delete what we store about the client; redact, remove the counselor, leave.

    The goodbye, the deletion, a ``released`` note to each counselor who
    still has the client, and one follow-up per room (session rooms, the
    rooms a page's taker met the client in, the DM) go into ONE
    transaction. The follow-ups redact the bot's messages (they need the
    event ids the outbox still holds, and a crash there leaves nothing
    readable in the database), remove the counselor from the session
    room, and leave; they are retried until done, also after a crash. The
    freed capacity goes to the waiting list.
    """
    lang = ctx.lang_of(client)
    fx.say(item.room_id, ctx.render.text(lang, "erase.done"))
    engagements = await ctx.store.engagements_of_client(client.user_id)
    for e in engagements:
        if e.status != "active" or e.counselor_id is None:
            continue
        counselor = await ctx.store.get_counselor(e.counselor_id)
        if counselor is None or counselor.case_room_id is None:
            continue
        fx.say(
            counselor.case_room_id,
            ctx.render.text(ctx.counselor_lang(counselor), "case.released", case=e.id),
            reader=counselor.user_id,
            case=CaseEvent("released", e.id, e.room_id),
        )
    # Rooms where a page's taker met the client count as session rooms:
    # everyone but the client is removed. Read before the deletion below.
    page_rooms = await ctx.store.page_rooms(client.user_id)
    sessions = {e.room_id for e in engagements if e.room_id} | set(page_rooms)
    room_ids = list(
        dict.fromkeys(
            [
                *(e.room_id for e in engagements if e.room_id),
                *page_rooms,
                client.dm_room_id,
                item.room_id,
            ]
        )
    )
    fx.write(ctx.audit_fn(client.user_id, "client.erase"))
    fx.write(lambda: ctx.store.delete_client(client.user_id))
    fx.follow("erase.about", subject=client.user_id)
    for room_id in room_ids:
        if room_id:
            fx.follow(
                "erase.room",
                room=room_id,
                keep_last=room_id == item.room_id,
                session=room_id in sessions,
                client=client.user_id,
            )
    fx.follow("drain", cause=f"erase:{item.event_id}")


async def follow_erase_about(ctx: Context, payload: dict[str, Any]) -> None:
    """Redact what the bot wrote about an erased client in other rooms (briefs)."""
    subject = str(payload["subject"])
    for room_id, event_id in await ctx.store.events_about(subject):
        await rooms.redact(ctx.matrix, room_id, event_id, txn_id(f"redact:{event_id}", 0))
        ctx.crash_point("erase.redacted")
    await ctx.store.forget_about(subject)


async def follow_erase_room(ctx: Context, payload: dict[str, Any]) -> None:
    """Redact the bot's messages in one of an erased client's rooms, remove the
    counselor, forget the room, leave it.

    In the room where the client asked (``keep_last``) the newest
    message, the goodbye, stays readable: it is the client's confirmation
    that the erasure happened, so it must have gone out first.
    """
    room_id = str(payload["room"])
    if payload.get("keep_last"):
        if ctx.flush is not None:
            await ctx.flush({room_id})
        if room_id in await ctx.store.unsent_rooms():
            raise Retry("the goodbye is not sent yet")
    sent = await ctx.store.sent_events(room_id)
    if payload.get("keep_last"):
        sent = sent[:-1]
    for event_id in sent:
        await rooms.redact(ctx.matrix, room_id, event_id, txn_id(f"redact:{event_id}", 0))
        ctx.crash_point("erase.redacted")
    if payload.get("session"):
        for user_id, membership in (await rooms.members(ctx.matrix, room_id)).items():
            if user_id in (ctx.bot, payload.get("client")):
                continue
            if membership in ("join", "invite"):
                await rooms.kick(ctx.matrix, room_id, user_id)
                ctx.crash_point("erase.kicked")
    await ctx.store.forget_room(room_id)
    await rooms.leave(ctx.matrix, room_id)
    ctx.crash_point("erase.left")


async def follow_lock(ctx: Context, payload: dict[str, Any]) -> None:
    """A closed engagement's room becomes read-only (its history stays readable)."""
    await rooms.make_read_only(ctx.matrix, str(payload["room"]))


async def follow_reinvite(ctx: Context, payload: dict[str, Any]) -> None:
    """Invite a client back into their session room if they left it."""
    room_id, client_id = str(payload["room"]), str(payload["client"])
    if (await rooms.members(ctx.matrix, room_id)).get(client_id) == "leave":
        await rooms.invite(ctx.matrix, room_id, client_id)
