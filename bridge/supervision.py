"""The supervisors' room (``!queue``, ``!oncall``, ``!reassign``) and roster upkeep."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from bridge import handover, rooms
from bridge.effects import (
    Effects,
)
from bridge.persistence.inbox import InboxItem
from e2ecounsel.domain.text import clean_text, normalize_command
from e2ecounsel.errors import MatrixError
from e2ecounsel.matrix import check

if TYPE_CHECKING:
    from bridge.engine import Engine

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ supervisors


async def on_supervisor_message(engine: Engine, item: InboxItem) -> None:
    """A ``!`` command in the supervisors' room, from someone on the supervisors' list.

    Being in the room is not enough: a configured room may hold others, and
    whoever an alias pointed at is nobody's supervisor.
    """
    fx = Effects(item.event_id)
    lang = engine.policy.service.default_language
    if item.kind == "text" and item.sender != engine.bot and item.body.startswith("!"):
        word, args = normalize_command(clean_text(item.body, engine.max_chars))
        handler = SUPERVISOR_COMMANDS.get(word)
        if not await engine.pages.is_supervisor(item.sender):
            fx.say(item.room_id, engine.render.text(lang, "not_allowed"))
        elif word == "take":
            await handover.cmd_take(engine, fx, item, args, reply_room=item.room_id, lang=lang)
        elif handler is None:
            fx.say(item.room_id, engine.render.text(lang, "help.supervisor"))
        else:
            await handler(engine, fx, args, item)
    await engine.commit(fx, item.event_id)


async def keep_supervisors_room(engine: Engine, *, manage: bool = True) -> None:
    """Create (once) the supervisors' room and keep its members in line with the list.

    Runs from the periodic upkeep, so ``e2ecounsel supervisor add/remove``
    takes effect while the bridge runs. The room's id is kept in the database
    (``rooms``, kind ``supervisors``); a room is made only when there is none.
    Supervisors missing from the room are invited; with ``manage`` (the room
    is the bridge's own, not one the operator configured) people who are no
    longer supervisors are removed. The member list is read only when the
    list of supervisors changed since the last look.
    """
    people = frozenset(s.user_id for s in await engine.pages.supervisors())
    room = engine.supervisors_room
    if room is None:
        if not people:
            return
        lang = engine.policy.service.default_language
        body = rooms.private_room_body(
            name=engine.render.text(lang, "supervisors.room_name"),
            invite=sorted(people),
            direct=False,
        )
        room = await engine.ensure_room("supervisors", engine.bot, body)
        await engine.store.set_room(room, "supervisors", None)
        engine.supervisors_room = room
        fx = Effects(f"supervisors-welcome:{room}")
        # History is readable from the join on: the welcome waits for the first to join.
        fx.say(room, engine.render.text(lang, "supervisors.welcome"), reader=min(people))
        await engine.commit(fx, None)
        engine.synced_supervisors[room] = people
        logger.info("created the supervisors' room %s for %d supervisor(s)", room, len(people))
        return
    if engine.synced_supervisors.get(room) == people:
        return
    status, body = await engine.session.raw(
        "GET", f"/_matrix/client/v3/rooms/{quote(room)}/members"
    )
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
            check(await engine.session.client.room_invite(room, user_id), "inviting a supervisor")
        except MatrixError as exc:
            logger.warning("inviting a supervisor failed: %s", exc.errcode)
            return
    if manage:
        for user_id in sorted(present - people - {engine.bot}):
            try:
                check(
                    await engine.session.client.room_kick(room, user_id, reason="not a supervisor"),
                    "removing a former supervisor",
                )
            except MatrixError as exc:
                logger.warning("removing a former supervisor failed: %s", exc.errcode)
                return
    engine.synced_supervisors[room] = people


async def cmd_queue(engine: Engine, fx: Effects, args: str, item: InboxItem) -> None:
    lang = engine.policy.service.default_language
    now_ms = int(engine.clock().timestamp() * 1000)
    active = await engine.store.active_engagements()
    awaiting = [e for e in active if e.awaiting_since]
    waiting = await engine.store.waiting()
    oldest = max((now_ms - (e.awaiting_since or now_ms) for e in awaiting), default=0)
    oldest_wl = max(
        (engine.clock() - datetime.fromisoformat(e.opened_at) for e in waiting), default=None
    )
    fx.say(
        item.room_id,
        engine.render.text(
            lang,
            "queue.summary",
            awaiting=len(awaiting),
            oldest_wait=_hours(oldest / 3_600_000),
            waitlisted=len(waiting),
            oldest_waitlist=_hours(oldest_wl.total_seconds() / 3600) if oldest_wl else "-",
            high_risk=sum(1 for e in active + waiting if e.risk == "high"),
        ),
    )


async def cmd_oncall(engine: Engine, fx: Effects, args: str, item: InboxItem) -> None:
    lang = engine.policy.service.default_language
    names = [c.name for c in await engine.store.list_counselors(active_only=True) if c.on_call]
    if names:
        fx.say(item.room_id, engine.render.text(lang, "oncall.list", names=", ".join(names)))
    else:
        fx.say(item.room_id, engine.render.text(lang, "oncall.none"))


async def cmd_reassign(engine: Engine, fx: Effects, args: str, item: InboxItem) -> None:
    lang = engine.policy.service.default_language
    parts = args.split()
    if len(parts) != 2:
        fx.say(item.room_id, engine.render.text(lang, "reassign.usage"))
        return
    room_id, target_id = parts
    eng = await engine.store.engagement_by_room(room_id)
    if eng is None or eng.status != "active":
        fx.say(item.room_id, engine.render.text(lang, "reassign.unknown_room"))
        return
    target = await engine.store.get_counselor(target_id)
    if target is None or not target.active:
        fx.say(item.room_id, engine.render.text(lang, "reassign.unknown_counselor"))
        return
    if eng.counselor_id == target_id:
        fx.say(item.room_id, engine.render.text(lang, "reassign.done", counselor_name=target.name))
        return
    if not await engine.has_room(target_id):
        fx.say(item.room_id, engine.render.text(lang, "reassign.full", counselor_name=target.name))
        return
    client = await engine.store.get_client(eng.client_id)
    if client is None:
        fx.say(item.room_id, engine.render.text(lang, "reassign.unknown_room"))
        return
    fx.say(item.room_id, engine.render.text(lang, "reassign.done", counselor_name=target.name))
    fx.write(engine.audit_fn(item.sender, "engagement.reassign", eng.id))
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


# ------------------------------------------------------------------ roster upkeep


async def rematch_orphans(engine: Engine) -> None:
    """Re-match active clients whose counselor was removed from the roster.

    Each client is told first, then moved like a switch (brief shared as
    before); when nobody is free they go on the waiting list. The cause is
    derived from the engagement, so a crash half-way repeats nothing.
    """
    active_ids = {c.user_id for c in await engine.store.list_counselors(active_only=True)}
    for eng in await engine.store.active_engagements():
        if eng.counselor_id is None or eng.counselor_id in active_ids:
            continue
        client = await engine.store.get_client(eng.client_id)
        if client is None:
            continue
        cause = f"rematch:{eng.id}"
        fx = Effects(cause)
        if client.dm_room_id:
            fx.say(
                client.dm_room_id, engine.render.text(engine.lang_of(client), "counselor.removed")
            )
        await engine.commit(fx, None)
        await engine.switch(
            client,
            None,
            eng.share_brief,
            cause=cause,
            note_key="counselor.rematched",
            waitlist_key="counselor.removed_waitlisted",
        )


def _hours(h: float) -> str:
    whole = int(h)
    return f"{whole} h {int((h - whole) * 60)} m"


SupervisorHandler = Callable[["Engine", Effects, str, InboxItem], Awaitable[None]]
SUPERVISOR_COMMANDS: dict[str, SupervisorHandler] = {
    "queue": cmd_queue,
    "oncall": cmd_oncall,
    "reassign": cmd_reassign,
}
