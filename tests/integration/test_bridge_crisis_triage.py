"""Crisis triage through the real bridge: the check question and its answers, no repeats.

A real Synapse, the real bridge and real E2EE clients; what the client and the counselor read
is compared with the policy texts.
"""

from __future__ import annotations

import pytest

from tests.integration.bridgekit import (
    POLICY,
    Chat,
    next_message,
    open_dm,
    seat_client,
    text,
    walk_intake,
)
from tests.integration.test_bridge_lifecycle import (
    COUNTRY,
    CRISIS_PAGED,
    audit_actions,
    bot,
    case_channel,
    clients,
    engagement,
    hire,
    link,
    new_client,
    newest_page,
    staff,
)

__all__ = ["bot", "clients", "staff"]  # fixtures shared with the lifecycle tests

CRISIS_LINE = POLICY.crisis_line("en", COUNTRY)


@pytest.fixture
async def ana(bot, staff, homeserver, user_factory, tmp_path, clients):
    """A client seated with Ana, and Ana's case channel."""
    await hire(bot, staff.ana, "Ana")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana")
    return client, seated, await case_channel(bot, staff.ana)


POSSIBLE = "lol kms"  # possible risk: a check, not the whole protocol


async def test_check_then_yes_starts_the_protocol(bot, staff, ana):
    client, seated, case = ana

    await seated.room.send(POSSIBLE)
    assert await next_message(seated.room) == text("en", "crisis.check")
    eng = await engagement(bot, client)
    assert eng.risk != "high" and not eng.crisis  # nobody paged for a question

    await seated.room.send("Yes, I am.")
    assert await next_message(seated.room) == CRISIS_PAGED
    page = text("en", "page.crisis", page=await newest_page(bot))
    await case.expect(page)
    eng = await engagement(bot, client)
    assert eng.risk == "high" and eng.crisis
    actions = await audit_actions(bot, client.session.user_id)
    assert ("crisis", "check:yes") in actions
    assert any(a == "crisis.check" and d.startswith("session:en.kms") for a, d in actions)

    # Throttled: the next crisis message gets a short acknowledgement and pages nobody.
    await seated.room.send("I want to kill myself")
    assert await next_message(seated.room) == text("en", "crisis.ack", crisis_line=CRISIS_LINE)
    assert await case.quiet() == []
    assert staff.ana.bodies(case.room_id).count(page) == 1


async def test_check_then_no_is_a_kind_reply_and_a_flag_for_the_counselor(bot, staff, ana):
    client, seated, case = ana

    await seated.room.send(POSSIBLE)
    assert await next_message(seated.room) == text("en", "crisis.check")
    await seated.room.send("no")
    assert await next_message(seated.room) == text("en", "crisis.check_no", crisis_line=CRISIS_LINE)
    await case.expect(text("en", "flag.check_no", room_link=link(seated.room.room_id)))
    eng = await engagement(bot, client)
    assert eng.risk != "high" and not eng.crisis
    assert ("crisis.check_no", "") in await audit_actions(bot, client.session.user_id)
    record = await bot.bridge.store.get_client(client.session.user_id)
    assert record.profile["crisis_flag"] == "check:no"
    # The answer was taken: a later "no" is an ordinary message again.
    await seated.room.send("no")
    assert await seated.room.quiet() == []


async def test_urgent_is_never_taken_as_an_answer_to_the_check(bot, staff, ana):
    client, seated, case = ana

    await seated.dm.send(POSSIBLE)
    assert await next_message(seated.dm) == text("en", "crisis.check")
    await seated.dm.send("urgent")
    assert await next_message(seated.dm) == CRISIS_PAGED
    assert await next_message(seated.dm) == text("en", "urgent.ack")
    page = text("en", "page.urgent", page=await newest_page(bot))
    await case.expect(page)
    sup = Chat(staff.supervisor, bot.supervisors_room, bot.user_id)
    await sup.expect(page)


async def test_a_no_before_any_counselor_reaches_the_brief(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    dm = await open_dm(client, bot.user_id)
    await dm.expect(lambda b: "Welcome to" in b)
    await dm.send(POSSIBLE)
    assert await next_message(dm) == text("en", "crisis.check")
    await dm.send("No")
    line = POLICY.crisis_line("en", None)  # no country known yet
    assert await next_message(dm) == text("en", "crisis.check_no", crisis_line=line)
    assert await next_message(dm) == text("en", "status.intake")  # back to the question

    await walk_intake(dm, greeted=True)
    await dm.send("auto")
    await dm.expect(text("en", "intake.matched", counselor_name="Ana"))
    case = await case_channel(bot, staff.ana)
    await case.expect(lambda b: text("en", "brief.check_no") in b)
