"""Room builders: what a session room and a case channel look like.

Room state is not encrypted in Matrix, so nothing personal goes into it: the
name is a generic text from policy (it may only use the service name), there is
no topic, no alias, and membership is all it reveals.
"""

from __future__ import annotations

from typing import Any

from e2ecounsel.matrix import MatrixSession, check

MEGOLM = "m.megolm.v1.aes-sha2"


def encryption_state() -> dict[str, Any]:
    return {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}


def session_room_state() -> list[dict[str, Any]]:
    """Encrypted from its first event, invite-only, no guests, history from join."""
    return [
        encryption_state(),
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
        {
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": {"history_visibility": "joined"},
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


async def create_session_room(
    session: MatrixSession, *, name: str, counselor: str, client: str
) -> str:
    """Create the engagement's room and invite both people; return its id."""
    resp = await session.client.room_create(
        name=name,
        invite=[counselor, client],
        initial_state=session_room_state(),
        power_level_override=session_power_levels(counselor, client),
    )
    check(resp, "creating a session room")
    room_id: str = resp.room_id
    return room_id


async def create_private_room(session: MatrixSession, *, name: str, invite: list[str]) -> str:
    """An encrypted, invite-only room for the bot and ``invite`` (case channel, supervisors)."""
    resp = await session.client.room_create(
        name=name,
        invite=invite,
        is_direct=len(invite) == 1,
        initial_state=session_room_state(),
        power_level_override={
            "users": dict.fromkeys(invite, 50),
            "state_default": 100,
            "invite": 100,
            "kick": 100,
        },
    )
    check(resp, "creating a room")
    room_id: str = resp.room_id
    return room_id


def room_link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"
