"""Room builders: what a session room and a case channel look like, and the
Matrix calls that create, find, lock and leave them.

Room state is not encrypted in Matrix, so nothing personal goes into it: the
name is a generic text from policy (it may only use the service name), there is
no topic, no alias, and membership is all it reveals. The creation content
carries one marker naming what the room is for (an engagement number, or the
counselor of a case channel, who is a member anyway), so a room whose creation
was interrupted by a crash is recognised instead of created twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from bridge.kernel.matrix import Matrix
from e2ecounsel.errors import MatrixError

logger = logging.getLogger(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"
#: The creation-content key naming a room's purpose ("engagement:12", "case:@c:server").
PURPOSE = "org.e2ecounsel.purpose"
#: The engagement number of a session room, in its creation content.
ENGAGEMENT = "org.e2ecounsel.engagement"
#: Above every member's level: nobody but the bot may write once a room is closed.
READ_ONLY = 100
_CREATE_ATTEMPTS = 5


def encryption_state() -> dict[str, Any]:
    return {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}


def session_room_state() -> list[dict[str, Any]]:
    """Encrypted from its first event, invite-only, no guests, history from the invitation.

    ``invited``, not ``joined``: a client writes first, often while the
    counselor is only invited (offline, or not yet signed in). With
    ``joined`` those words could never be read by the counselor, and
    matrix-js-sdk clients (Element) do not even share room keys with invited
    members. ``invited`` makes them readable from the invitation on, which
    is what the two people in the room expect. ``shared`` would go further
    and show the room's whole past to anyone invited later, such as a
    colleague after a switch; the bot never re-invites a counselor into a
    room they left, so ``invited`` reveals nothing before someone's
    invitation.
    """
    return [
        encryption_state(),
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
        {
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": {"history_visibility": "invited"},
        },
    ]


def session_power_levels(counselor: str, client: str) -> dict[str, Any]:
    """Counselor 50, client 0; only the bot adds, removes or changes state.

    The bot creates the room. Since room version 12 the creator holds power
    above every level and may not be listed in ``users``; in older versions
    Synapse gives the creator 100 by default. Either way: bot 100 or more.
    """
    return {
        "users": {counselor: 50, client: 0},
        "users_default": 0,
        "events_default": 0,
        "state_default": 100,
        "invite": 100,
        "kick": 100,
        "ban": 100,
        "redact": 50,
        "events": {
            "m.room.name": 100,
            "m.room.topic": 100,
            "m.room.avatar": 100,
            "m.room.power_levels": 100,
            "m.room.encryption": 100,
            "m.room.history_visibility": 100,
            "m.room.join_rules": 100,
            "m.room.canonical_alias": 100,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
        },
        "notifications": {"room": 100},
    }


def read_only(levels: dict[str, Any]) -> dict[str, Any]:
    """``levels`` with every message above both people (the history stays readable)."""
    events = dict(levels.get("events") or {})
    events["m.room.message"] = READ_ONLY
    events["m.room.encrypted"] = READ_ONLY
    events["m.reaction"] = READ_ONLY
    return {**levels, "events_default": READ_ONLY, "events": events}


def marker(purpose: str) -> dict[str, Any]:
    """The creation-content keys that name a room's purpose."""
    kind, _, value = purpose.partition(":")
    out: dict[str, Any] = {PURPOSE: purpose}
    if kind == "engagement":
        out[ENGAGEMENT] = int(value)
    return out


async def create_room(session: Matrix, body: dict[str, Any], purpose: str) -> str:
    """Create a room with ``purpose`` in its creation content; rate limits are waited out."""
    body = {
        **body,
        "visibility": "private",
        "creation_content": {"m.federate": True, **marker(purpose)},
    }
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        status, answer = await session.raw("POST", "/_matrix/client/v3/createRoom", body)
        if status == 200 and isinstance(answer, dict) and "room_id" in answer:
            return str(answer["room_id"])
        if status == 429 and attempt < _CREATE_ATTEMPTS and isinstance(answer, dict):
            await asyncio.sleep(min(float(answer.get("retry_after_ms", 1000)) / 1000, 30.0))
            continue
        errcode = answer.get("errcode") if isinstance(answer, dict) else None
        raise MatrixError(f"creating a room: {status} {errcode}", errcode=errcode, status=status)
    raise MatrixError("creating a room: rate limited", status=429)


async def find_room(session: Matrix, purpose: str, known: Collection[str]) -> str | None:
    """A room the bot is in whose creation content names ``purpose`` (not one of ``known``)."""
    status, answer = await session.raw("GET", "/_matrix/client/v3/joined_rooms")
    if status != 200 or not isinstance(answer, dict):
        raise MatrixError(f"listing joined rooms: {status}", status=status)
    for room_id in answer.get("joined_rooms", []):
        if room_id in known:
            continue
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.create/"
        status, content = await session.raw("GET", path)
        if status == 200 and isinstance(content, dict) and content.get(PURPOSE) == purpose:
            return str(room_id)
    return None


def session_room_body(*, name: str, counselor: str, client: str) -> dict[str, Any]:
    """The engagement's room: both people invited, the bot above them."""
    return {
        "name": name,
        "invite": [counselor, client],
        "is_direct": False,
        "initial_state": session_room_state(),
        "power_level_content_override": session_power_levels(counselor, client),
    }


def private_room_body(*, name: str, invite: list[str], direct: bool = True) -> dict[str, Any]:
    """An encrypted, invite-only room for the bot and ``invite`` (case channel, supervisors).

    ``direct`` marks a room with one invitee as a direct chat in their app (the
    case channel); a group such as the supervisors' room is never one.
    """
    return {
        "name": name,
        "invite": invite,
        "is_direct": direct and len(invite) == 1,
        "initial_state": session_room_state(),
        "power_level_content_override": {
            "users": dict.fromkeys(invite, 50),
            "state_default": 100,
            "invite": 100,
            "kick": 100,
        },
    }


async def make_read_only(session: Matrix, room_id: str) -> None:
    """Nobody but the bot can post in ``room_id`` any more; everyone can still read it."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels/"
    status, levels = await session.raw("GET", path)
    if status != 200 or not isinstance(levels, dict):
        raise MatrixError(f"reading power levels: {status}", status=status)
    if levels.get("events_default") == READ_ONLY:
        return
    status, answer = await session.raw("PUT", path, read_only(levels))
    if status != 200:
        raise MatrixError(f"locking a closed room: {status}", status=status)


async def members(session: Matrix, room_id: str) -> dict[str, str]:
    """Everyone's membership in ``room_id`` (joined, invited, left ...)."""
    status, answer = await session.raw("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/members")
    if status == 403:
        return {}  # we are no longer in the room
    if status != 200 or not isinstance(answer, dict):
        raise MatrixError(f"reading members: {status}", status=status)
    out: dict[str, str] = {}
    for event in answer.get("chunk", []):
        content = event.get("content") or {}
        out[str(event.get("state_key"))] = str(content.get("membership"))
    return out


async def kick(session: Matrix, room_id: str, user_id: str, *, known_member: bool = False) -> None:
    """Remove ``user_id`` (joined or invited); nothing to do if they are gone already.

    With ``known_member`` the caller has just read the members and the lookup is
    skipped. No reason is given: a membership event is not encrypted.
    """
    if not known_member and (await members(session, room_id)).get(user_id) not in (
        "join",
        "invite",
    ):
        return
    status, answer = await session.raw(
        "POST",
        f"/_matrix/client/v3/rooms/{quote(room_id)}/kick",
        {"user_id": user_id},
    )
    if status != 200:
        raise MatrixError(f"removing a member: {status}", status=status)


async def invite(session: Matrix, room_id: str, user_id: str) -> None:
    """Invite ``user_id`` again (a client who left their session room)."""
    status, answer = await session.raw(
        "POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": user_id}
    )
    if status != 200:
        raise MatrixError(f"inviting a member: {status}", status=status)


async def redact(session: Matrix, room_id: str, event_id: str, txn_id: str) -> None:
    """Redact one of the bot's events (a repeated ``txn_id`` is dropped by the homeserver)."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/redact/{quote(event_id)}/{quote(txn_id)}"
    status, answer = await session.raw("PUT", path, {})
    if status not in (200, 403, 404):
        raise MatrixError(f"redacting: {status}", status=status)
    if status != 200:
        logger.warning("redacting in %s refused: %s", room_id, status)


async def leave(session: Matrix, room_id: str) -> None:
    status, answer = await session.raw(
        "POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}
    )
    if status not in (200, 403, 404):
        raise MatrixError(f"leaving a room: {status}", status=status)


def room_link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"
