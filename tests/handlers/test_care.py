"""Placement, crisis and endings at the handler tier: what each person would be sent."""

from __future__ import annotations

from urllib.parse import quote

from tests.handlers.kit import BOT, Hub, seat, session_of


async def test_a_finished_intake_opens_one_session_room_and_briefs_the_counselor(hub: Hub) -> None:
    ana = await hub.counselor("@ana:test", "Ana")
    dm = await seat(hub, "@rain:test", pseudonym="Rain")
    case, room = await session_of(hub, "@rain:test")
    assert len(hub.matrix.calls("/createRoom")) == 2  # the session room and Ana's case channel
    assert hub.matrix.members[room].keys() == {BOT, ana.user_id, "@rain:test"}
    counselor = await hub.store.get_counselor(ana.user_id)
    assert counselor is not None and counselor.case_room_id is not None
    hub.join(counselor.case_room_id, ana.user_id)
    await hub.flush()
    brief = [f for f in hub.facts(counselor.case_room_id) if f.kind == "brief"]
    assert [(f.engagement, f.room, f.data["pseudonym"]) for f in brief] == [(case, room, "Rain")]
    assert hub.policy.text("en", "intake.matched", counselor_name="Ana") in hub.said(dm)
    # Nothing personal in the room's state: its name is the generic one.
    create = hub.matrix.calls("/createRoom")
    assert {c[2]["name"] for c in create if c[2]} <= {
        hub.policy.text("en", "session.room_name"),
        hub.policy.text("en", "case.room_name"),
    }


async def test_a_crisis_mid_intake_pages_the_on_call_counselor_with_a_mention_and_no_content(
    hub: Hub,
) -> None:
    ana = await hub.counselor("@ana:test", "Ana", on_call=True)
    dm = await hub.open_dm("@rain:test")
    await hub.event(dm, "@rain:test", "1")
    await hub.event(dm, "@rain:test", "i want to kill myself tonight at the bridge")
    assert hub.said(dm)[-2].startswith(hub.policy.crisis_reply("en", None)[:40])
    counselor = await hub.store.get_counselor(ana.user_id)
    assert counselor is not None and counselor.case_room_id is not None
    hub.join(counselor.case_room_id, ana.user_id)
    await hub.flush()
    pages = [s for s in hub.sent if s.room_id == counselor.case_room_id and s.case]
    page = [s for s in pages if s.case and s.case.kind == "page"]
    assert len(page) == 1
    assert page[0].content["m.mentions"] == {"user_ids": [ana.user_id]}
    assert "bridge" not in page[0].body and "tonight" not in page[0].body
    assert page[0].case is not None and page[0].case.data["reason"] == "phrase:dm"


async def test_close_locks_the_room_asks_the_client_for_a_score_and_frees_the_place(
    hub: Hub,
) -> None:
    ana = await hub.counselor("@ana:test", "Ana", capacity=1)
    dm = await seat(hub, "@rain:test")
    case, room = await session_of(hub, "@rain:test")
    waiting_dm = await seat(hub, "@sky:test")
    assert (await hub.store.current_engagement("@sky:test")).status == "waiting"  # type: ignore[union-attr]
    channel = (await hub.store.get_counselor(ana.user_id)).case_room_id  # type: ignore[union-attr]
    assert channel is not None
    hub.join(channel, ana.user_id)

    await hub.event(channel, ana.user_id, f"!close {case} resolved thank you")
    assert (await hub.store.get_engagement(case)).status == "closed"  # type: ignore[union-attr]
    assert hub.facts(channel)[-1].kind in ("closed", "brief")
    assert any(f.kind == "closed" and f.engagement == case for f in hub.facts(channel))
    levels = [b for m, p, b in hub.matrix.requests if m == "PUT" and "power_levels" in p]
    assert levels and levels[-1]["events_default"] == 100  # type: ignore[index]
    assert hub.policy.text("en", "survey.ask") in hub.said(dm)
    # The freed place goes to the client who waited.
    assert (await hub.store.current_engagement("@sky:test")).status == "active"  # type: ignore[union-attr]
    assert hub.policy.text("en", "waitlist.assigned", counselor_name="Ana") in hub.said(waiting_dm)

    await hub.event(dm, "@rain:test", "5")
    await hub.event(dm, "@rain:test", "it helped")
    assert hub.last(dm) == hub.policy.text("en", "survey.thanks")


async def test_erase_redacts_the_bots_messages_removes_the_counselor_and_leaves(hub: Hub) -> None:
    ana = await hub.counselor("@ana:test", "Ana")
    dm = await seat(hub, "@rain:test")
    case, room = await session_of(hub, "@rain:test")
    await hub.event(dm, "@rain:test", "erase")
    await hub.event(dm, "@rain:test", "yes")
    assert await hub.store.get_client("@rain:test") is None
    assert hub.matrix.members[room][ana.user_id] == "leave"
    left = {p for m, p, _ in hub.matrix.requests if p.endswith("/leave")}
    assert any(quote(room) in p for p in left)
    redacted = hub.matrix.calls("/redact/")
    assert len(redacted) >= len([s for s in hub.sent if s.room_id == room])
    assert hub.last(dm) == hub.policy.text("en", "erase.done")
