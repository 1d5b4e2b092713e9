"""Crisis, close and survey, switch, refer, erase, supervisors, roster changes, odd input.

End to end: a real Synapse, the real bridge and real E2EE clients. Each flow is
checked twice: on what a person reads in their own client (decrypted text,
compared with the policy texts) and on what the bridge stored.

The counselor and supervisor accounts are shared by the module (signing in with
cross-signing is the slow part); every test gets its own bot, database and
supervisors' room, and fresh client accounts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bridge.kernel.render import Renderer
from e2ecounsel.domain import intake
from tests.integration.bridgekit import (
    POLICY,
    BotEnv,
    Chat,
    Seated,
    answer_country,
    bot_event_ids,
    consent_start,
    counselor_record,
    fetch_event,
    help_text,
    make_bot,
    membership,
    next_message,
    open_dm,
    person,
    seat_client,
    supervisors_room,
    text,
    walk_intake,
)
from tests.integration.matrixkit import Recorder, until

CRISIS_WORDS = "I want to kill myself"
COUNTRY = POLICY.crisis.countries[0].code  # the first in the intake's list: "1"
CRISIS_REPLY = POLICY.crisis_reply("en", COUNTRY)
#: The crisis reply, and what really happened: the on-call team was alerted.
CRISIS_PAGED = CRISIS_REPLY.rstrip() + "\n\n" + text("en", "crisis.paged")


def link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"


def fits(template: str, body: str) -> bool:
    """``body`` is ``template`` with each ``§`` standing for a wait like ``5 m``, ``3 h 12 m``
    or ``2 d 4 h`` (see :func:`e2ecounsel.domain.cadence.format_wait`)."""
    wait = r"(?:\d+ d \d+ h|\d+ h \d+ m|\d+ m)"
    pattern = wait.join(re.escape(part) for part in template.split("§"))
    return re.fullmatch(pattern, body) is not None


@dataclass
class Staff:
    ana: Recorder
    budi: Recorder
    supervisor: Recorder


@pytest.fixture(scope="module")
async def staff(homeserver, user_factory, tmp_path_factory) -> AsyncIterator[Staff]:
    base = tmp_path_factory.mktemp("staff")
    people = Staff(
        await person(homeserver, user_factory, base, "ana"),
        await person(homeserver, user_factory, base, "budi"),
        await person(homeserver, user_factory, base, "supervisor"),
    )
    yield people
    for who in (people.ana, people.budi, people.supervisor):
        await who.close()


@pytest.fixture
async def bot(homeserver, tmp_path, staff, bridge_database) -> AsyncIterator[BotEnv]:
    env = await make_bot(homeserver, tmp_path, bridge_database)
    env.supervisors_room = await supervisors_room(staff.supervisor, env.user_id)
    await env.start()
    await env.bridge.ctx.pages.add_supervisor(staff.supervisor.session.user_id, "Sari")
    await until(
        lambda: staff.supervisor.joined(env.supervisors_room, env.user_id),
        what="bot joins the supervisors' room",
    )
    yield env
    await env.stop()


@pytest.fixture
async def clients(homeserver, user_factory, tmp_path) -> AsyncIterator[list[Recorder]]:
    """``clients`` fills this list via :func:`new_client`; all are closed afterwards."""
    made: list[Recorder] = []
    yield made
    for who in made:
        await who.close()


async def new_client(homeserver, user_factory, tmp_path, made: list[Recorder]) -> Recorder:
    who = await person(homeserver, user_factory, tmp_path, "client")
    made.append(who)
    return who


async def hire(env: BotEnv, who: Recorder, name: str, **over: object) -> None:
    assert env.bridge is not None
    await env.bridge.store.add_counselor(counselor_record(who.session.user_id, name, **over))


async def case_channel(env: BotEnv, who: Recorder) -> Chat:
    """The counselor's case channel with this bot, once the bot has opened it."""
    store = env.bridge.store

    async def room_id() -> str | None:
        c = await store.get_counselor(who.session.user_id)
        return c.case_room_id if c else None

    found: list[str] = []

    async def poll() -> bool:
        rid = await room_id()
        if rid:
            found.append(rid)
        return bool(rid)

    await async_until(poll, what="the case channel")
    return Chat(who, found[-1], env.user_id)


async def async_until(check, *, timeout: float = 30.0, what: str = "condition") -> None:
    """:func:`until` for a condition that needs to await (a database read)."""
    result = [False]

    async def refresh() -> None:
        result[0] = await check()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await refresh()
    while not result[0]:
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)
        await refresh()


async def newest_page(env: BotEnv) -> int:
    """The number of the newest crisis page (pages say "Page N")."""
    found: list[int] = []

    async def poll() -> bool:
        page = await env.bridge.ctx.pages.newest_open()
        if page is not None:
            found.append(page.id)
        return page is not None

    await async_until(poll, what="a crisis page")
    return found[-1]


async def engagement(env: BotEnv, client: Recorder):
    return await env.bridge.store.current_engagement(client.session.user_id)


async def audit_actions(env: BotEnv, user_id: str) -> list[tuple[str, str]]:
    lines = await env.bridge.store.audit_lines(user_id=user_id)
    return [(line.action, line.detail) for line in lines]


# ---------------------------------------------------------------------- crisis


async def test_crisis_words_during_intake_get_help_first_and_page_without_content(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana", on_call=True)
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    dm = await open_dm(client, bot.user_id)
    await dm.expect(lambda b: "Welcome to" in b)
    await dm.send("1")
    await dm.expect(lambda b: consent_start("en") in b)
    await dm.send("agree")
    await dm.expect(text("en", "intake.age", min_age=18))
    await dm.send("yes")
    await dm.expect(lambda b: POLICY.crisis.countries[0].label["en"] in b)
    await answer_country(dm)

    await dm.send(CRISIS_WORDS)
    assert await next_message(dm) == CRISIS_PAGED
    assert await next_message(dm) == text("en", "intake.paused")

    # The on-call counselor and the supervisors are paged: a number, none of the words.
    page = text("en", "page.crisis", page=await newest_page(bot))
    case = await case_channel(bot, staff.ana)
    await case.expect(page)
    sup = Chat(staff.supervisor, bot.supervisors_room, bot.user_id)
    await sup.expect(page)
    for body in [*case.bot_messages(), *sup.bot_messages()]:
        assert "kill" not in body and "myself" not in body

    # The words were not taken as the pseudonym: the intake is paused at that step.
    store = bot.bridge.store
    rec = await store.get_client(client.session.user_id)
    state = intake.IntakeState.from_dict(rec.intake)
    assert (state.step, state.resume) == (intake.Stage.PAUSED, intake.Stage.PSEUDONYM)
    assert state.pseudonym is None
    assert rec.profile.get("crisis") is True
    assert ("crisis", "phrase:dm") in await audit_actions(bot, client.session.user_id)
    for line in await store.audit_lines():
        assert "kill" not in line.detail

    # Later is fine; "now" carries on from there.
    await dm.send("later")
    await dm.expect(text("en", "intake.pause_later"))
    await dm.send("now")
    await dm.expect(text("en", "intake.pseudonym", max_len=40))
    await dm.send("Rain")
    await dm.expect(lambda b: POLICY.instruments["phq9"].items[0].text["en"] in b)


async def test_crisis_words_in_the_session_room(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana")
    case = await case_channel(bot, staff.ana)

    await seated.room.send(CRISIS_WORDS)
    assert await next_message(seated.room) == CRISIS_PAGED
    eng = await engagement(bot, client)
    assert eng.risk == "high" and eng.crisis
    page = text("en", "page.crisis", page=await newest_page(bot))
    await case.expect(page)
    await Chat(staff.supervisor, bot.supervisors_room, bot.user_id).expect(page)
    # The counselor reads the client's words where they belong: in the session room.
    await until(
        lambda: CRISIS_WORDS in staff.ana.bodies(seated.room.room_id),
        what="the counselor reads the message",
    )
    assert all(CRISIS_WORDS not in b for b in staff.ana.bodies(case.room_id))


async def test_phq9_item_9_starts_the_protocol_and_matching_prefers_on_call(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    # Ana fits the topic (anxiety); Budi does not but is on call: in a crisis Budi wins.
    await hire(bot, staff.ana, "Ana", specialties=("anxiety",))
    await hire(bot, staff.budi, "Budi", specialties=("career",), on_call=True)
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    dm = await open_dm(client, bot.user_id)
    await walk_intake(dm, phq=["0"] * 8 + ["1"], gad=["skip"])

    msgs = dm.bot_messages()
    item9 = next(
        i for i, b in enumerate(msgs) if POLICY.instruments["phq9"].items[8].text["en"] in b
    )
    crisis_at = msgs.index(CRISIS_PAGED)
    gad_at = next(
        i for i, b in enumerate(msgs) if POLICY.instruments["gad7"].items[0].text["en"] in b
    )
    assert item9 < crisis_at < gad_at, "the crisis reply comes at once"
    assert crisis_at == item9 + 1
    paused_at = msgs.index(text("en", "intake.paused"))
    assert crisis_at < paused_at < gad_at, "the intake waits until the client says now"
    page = text("en", "page.crisis", page=await newest_page(bot))
    budi_case = await case_channel(bot, staff.budi)
    await budi_case.expect(page)

    await dm.send("auto")
    await dm.expect(text("en", "intake.matched", counselor_name="Budi"))
    eng = await engagement(bot, client)
    assert eng.counselor_id == staff.budi.session.user_id
    assert eng.risk == "high" and eng.crisis
    critical = text(
        "en",
        "brief.critical",
        instrument_title=POLICY.instruments["phq9"].title["en"],
        item=9,
        answer=1,
    )
    await budi_case.expect(lambda b: critical in b and "Rain" in b)


async def test_urgent_pages_and_acknowledges(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana")
    case = await case_channel(bot, staff.ana)

    await seated.dm.send("urgent")
    assert await next_message(seated.dm) == CRISIS_PAGED
    assert await next_message(seated.dm) == text("en", "urgent.ack")
    page = text("en", "page.urgent", page=await newest_page(bot))
    await case.expect(page)
    await Chat(staff.supervisor, bot.supervisors_room, bot.user_id).expect(page)
    eng = await engagement(bot, client)
    assert eng.risk == "high" and eng.crisis
    assert ("crisis", "command:urgent") in await audit_actions(bot, client.session.user_id)


# ---------------------------------------------------------------------- session commands


async def test_close_survey_and_the_freed_place_goes_to_the_waiting_list(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana", capacity=1)
    first = await seat_client(
        bot, await new_client(homeserver, user_factory, tmp_path, clients), "Ana"
    )
    second = await new_client(homeserver, user_factory, tmp_path, clients)
    second_dm = await open_dm(second, bot.user_id)
    await walk_intake(second_dm)
    await second_dm.send("auto")
    await second_dm.expect(text("en", "intake.waitlisted", position=1))

    store = bot.bridge.store
    eng = await engagement(bot, first.client)
    await until(
        lambda: staff.ana.joined(first.room.room_id, staff.ana.session.user_id),
        what="counselor joins",
    )
    await staff.ana.session.send_text(first.room.room_id, "!close resolved thank you")
    await first.room.expect(text("en", "close.resolved", counselor_name="Ana"))
    # The counselor's confirmation goes to the case channel, not to the client.
    await (await case_channel(bot, staff.ana)).expect(text("en", "close.done", outcome="resolved"))
    closed = await store.get_engagement(eng.id)
    assert closed.status == "closed" and closed.outcome == "resolved"
    assert await store.current_engagement(first.user_id) is None

    # The survey, in the client's DM.
    await first.dm.expect(text("en", "survey.ask"))
    await first.dm.send("9")
    await first.dm.expect(text("en", "survey.invalid"))
    await first.dm.send("4")
    await first.dm.expect(text("en", "survey.comment"))
    comment = "It helped a lot, thank you"
    await first.dm.send(comment)
    await first.dm.expect(text("en", "survey.thanks"))
    done = await store.get_engagement(eng.id)
    assert done.survey_score == 4
    assert await store.survey_comment(eng.id) == comment
    raw = await store.db.fetchval("SELECT survey_comment FROM engagements WHERE id = ?", (eng.id,))
    assert comment.encode() not in bytes(raw), "the comment is stored sealed"
    assert (await store.get_client(first.user_id)).pending is None
    # The closing note is kept, sealed.
    note = await store.db.fetchval("SELECT close_note FROM engagements WHERE id = ?", (eng.id,))
    assert b"thank you" not in bytes(note)
    assert store.db.open_sealed(note, context="engagements.close_note") == "thank you"

    # Ana's place went to the client on the waiting list.
    await second_dm.expect(text("en", "waitlist.assigned", counselor_name="Ana"))
    later = await engagement(bot, second)
    assert later.status == "active" and later.counselor_id == staff.ana.session.user_id

    # Coming back later starts a new intake; commands still answer as before.
    await first.dm.send("status")
    await first.dm.expect(text("en", "status.none"))
    await first.dm.send("hello again")
    await first.dm.expect(lambda b: "Welcome to" in b)


async def test_session_commands_are_the_counselors_and_checked(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana")
    seated = await seat_client(
        bot, await new_client(homeserver, user_factory, tmp_path, clients), "Ana"
    )
    store = bot.bridge.store
    before = await engagement(bot, seated.client)

    # The client cannot close their own counseling.
    await seated.room.send("!close resolved")
    assert await next_message(seated.room) == text("en", "not_allowed")
    after = await engagement(bot, seated.client)
    assert after.status == "active" and after.outcome is None and after.risk == before.risk
    assert (await store.get_client(seated.user_id)).pending is None
    # Other "!" lines of the client are conversation, not commands.
    await seated.room.send("!!! so much happened this week")
    assert await seated.room.quiet(1.0) == []
    assert await seated.dm.quiet(0.1) == []

    # The counselor sets the risk level; a wrong level only gets the usage line.
    room_id = seated.room.room_id
    await until(
        lambda: staff.ana.joined(room_id, staff.ana.session.user_id), what="counselor joins"
    )
    # Typed in the session room, commands are answered in the case channel only.
    case = await case_channel(bot, staff.ana)
    await staff.ana.session.send_text(room_id, "!risk high")
    await case.expect(text("en", "risk.set", level=text("en", "risk.high")))
    assert (await engagement(bot, seated.client)).risk == "high"
    await staff.ana.session.send_text(room_id, "!risk extreme")
    await case.expect(text("en", "risk.usage"))
    await staff.ana.session.send_text(room_id, "!close sometime")
    await case.expect(text("en", "close.usage"))
    await staff.ana.session.send_text(room_id, "!dance")
    await case.expect(text("en", "unknown_command_counselor"))
    assert await seated.room.quiet(0.5) == []
    still = await engagement(bot, seated.client)
    assert still.risk == "high" and still.status == "active"
    assert ("engagement.risk", "high") in await audit_actions(bot, staff.ana.session.user_id)


# ---------------------------------------------------------------------- switch and refer


async def test_switch_to_another_counselor_without_sharing_the_brief(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana", specialties=("anxiety",))
    await hire(bot, staff.budi, "Budi", specialties=("career",))
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana", pseudonym="Kestrel")
    store = bot.bridge.store
    old = await engagement(bot, client)
    ana_case = await case_channel(bot, staff.ana)

    await seated.dm.send("switch")
    budi = await store.get_counselor(staff.budi.session.user_id)
    options = Renderer(POLICY).profiles("en", [budi])
    await seated.dm.expect(text("en", "switch.choose", options=options))
    await seated.dm.send("7")
    await seated.dm.expect(text("en", "switch.invalid", count=1))
    await seated.dm.send("1")
    await seated.dm.expect(text("en", "switch.brief_consent", counselor_name="Budi"))
    await seated.dm.send("no")
    await seated.dm.expect(text("en", "switch.done", counselor_name="Budi"))

    new = await engagement(bot, client)
    assert new.id != old.id and new.counselor_id == budi.user_id and not new.share_brief
    gone = await store.get_engagement(old.id)
    assert gone.status == "closed" and gone.outcome is None
    assert new.room_id != old.room_id

    # The old room: the client keeps it and its history; Ana was removed.
    await seated.room.expect(text("en", "switch.old_room"))
    await until(
        lambda: not client.joined(old.room_id, staff.ana.session.user_id),
        what="Ana leaves the old room",
    )
    assert await membership(client, old.room_id, staff.ana.session.user_id) == "leave"
    assert await membership(client, old.room_id, client.session.user_id) == "join"
    assert any("Ana" in b for b in seated.room.bot_messages()), "the history stays"
    await ana_case.expect(text("en", "switch.counselor_notice", room_link=link(old.room_id)))

    # Budi: a room link and no brief, so not the pseudonym either.
    budi_case = await case_channel(bot, staff.budi)
    await budi_case.expect(text("en", "brief.not_shared", room_link=link(new.room_id), case=new.id))
    assert all("Kestrel" not in b for b in budi_case.bot_messages())
    await until(lambda: client.joined(new.room_id, client.session.user_id), what="new room")
    await Chat(client, new.room_id, bot.user_id).expect(lambda b: "Budi" in b)


async def test_refer_hands_the_client_over(bot, staff, homeserver, user_factory, tmp_path, clients):
    server_name = staff.ana.session.user_id.split(":", 1)[1]
    await hire(bot, staff.ana, "Ana", specialties=("anxiety",))
    await hire(bot, staff.budi, "Budi", specialties=("career",))
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana", pseudonym="Heron")
    old = await engagement(bot, client)
    room_id = seated.room.room_id
    await until(
        lambda: staff.ana.joined(room_id, staff.ana.session.user_id), what="counselor joins"
    )

    case = await case_channel(bot, staff.ana)
    await staff.ana.session.send_text(room_id, "!refer somebody")
    await case.expect(text("en", "refer.usage"))
    await staff.ana.session.send_text(room_id, f"!refer @nobody:{server_name}")
    await case.expect(text("en", "refer.unknown"))
    await staff.ana.session.send_text(room_id, f"!refer {staff.budi.session.user_id}")
    await case.expect(text("en", "refer.done", counselor_name="Budi"))
    await seated.dm.expect(text("en", "refer.client", counselor_name="Budi"))

    new = await engagement(bot, client)
    assert new.counselor_id == staff.budi.session.user_id and new.room_id != old.room_id
    assert (await bot.bridge.store.get_engagement(old.id)).status == "closed"
    budi_case = await case_channel(bot, staff.budi)
    await budi_case.expect(text("en", "refer.incoming", room_link=link(new.room_id)))
    await budi_case.expect(lambda b: "Heron" in b and link(new.room_id) in b)  # the brief
    await until(
        lambda: not client.joined(old.room_id, staff.ana.session.user_id),
        what="Ana leaves the old room",
    )
    assert ("engagement.refer", "") in await audit_actions(bot, staff.ana.session.user_id)


# ---------------------------------------------------------------------- erase


async def test_erase_asks_first_then_forgets_redacts_and_leaves(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana", pseudonym="Canary42x")
    store = bot.bridge.store
    user_id = client.session.user_id
    eng = await engagement(bot, client)

    # "no" cancels and changes nothing.
    await seated.dm.send("erase")
    await seated.dm.expect(text("en", "erase.confirm"))
    await seated.dm.send("no")
    await seated.dm.expect(text("en", "erase.cancelled"))
    kept = await store.get_client(user_id)
    assert kept is not None and kept.pending is None and kept.profile["pseudonym"] == "Canary42x"
    assert (await engagement(bot, client)).id == eng.id

    session_ids = bot_event_ids(client, eng.room_id, bot.user_id)
    dm_ids = bot_event_ids(client, seated.dm.room_id, bot.user_id)
    assert session_ids and dm_ids
    await seated.dm.send("erase")
    await seated.dm.expect(text("en", "erase.confirm"))
    await seated.dm.send("yes")
    await seated.dm.expect(text("en", "erase.done"))

    # The bot left both rooms (as the client sees them) ...
    for room_id in (eng.room_id, seated.dm.room_id):
        await until(
            lambda room_id=room_id: not client.joined(room_id, bot.user_id), what="the bot leaves"
        )
        assert await membership(client, room_id, bot.user_id) == "leave"
    # ... after redacting what it had said there, except the goodbye.
    for room_id, event_id in [(eng.room_id, e) for e in session_ids] + [
        (seated.dm.room_id, e) for e in dm_ids
    ]:
        event = await fetch_event(client, room_id, event_id)
        assert event.get("content") == {}, f"not redacted: {event.get('type')}"
    goodbye = bot_event_ids(client, seated.dm.room_id, bot.user_id)[-1]
    assert (await fetch_event(client, seated.dm.room_id, goodbye)).get("content") != {}
    # The brief with the pseudonym, in the counselor's case channel, is redacted too.
    case_room = (await store.get_counselor(staff.ana.session.user_id)).case_room_id
    briefs = [
        m.event_id for m in staff.ana.messages if m.room_id == case_room and "Canary42x" in m.body
    ]
    assert briefs, "the counselor had received the brief"
    for event_id in briefs:
        await until_redacted(staff.ana, case_room, event_id)

    # Nothing about the client is left in the bridge database but the audit trail.
    assert await store.get_client(user_id) is None
    assert await store.engagements_of_client(user_id) == []
    assert await store.rooms_of(user_id) == []
    assert await store.sent_events(eng.room_id) == []
    assert await store.sent_events(seated.dm.room_id) == []
    actions = await audit_actions(bot, user_id)
    assert [a for a, _ in actions].count("client.erase") == 1
    assert all("Canary" not in detail for _, detail in actions)
    assert (await store.verify_audit()).ok


async def until_redacted(who: Recorder, room_id: str, event_id: str) -> None:
    for _ in range(100):
        if (await fetch_event(who, room_id, event_id)).get("content") == {}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the brief was not redacted")


# ---------------------------------------------------------------------- supervisors


async def test_supervisor_commands_queue_oncall_reassign(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana", capacity=1, on_call=True)
    first = await seat_client(
        bot, await new_client(homeserver, user_factory, tmp_path, clients), "Ana"
    )
    await first.room.send("hello, are you there?")
    waiting = await new_client(homeserver, user_factory, tmp_path, clients)
    waiting_dm = await open_dm(waiting, bot.user_id)
    await walk_intake(waiting_dm)
    await waiting_dm.send("auto")
    await waiting_dm.expect(text("en", "intake.waitlisted", position=1))
    store = bot.bridge.store
    await async_until(
        lambda: _awaiting(store, first.room.room_id), what="the client's message is noted"
    )

    sup = Chat(staff.supervisor, bot.supervisors_room, bot.user_id)
    say = staff.supervisor.session.send_text
    await say(sup.room_id, "!queue")
    summary = text(
        "en",
        "queue.summary",
        awaiting=1,
        oldest_wait="§",
        waitlisted=1,
        oldest_waitlist="§",
        high_risk=0,
    )
    await sup.expect(lambda b: fits(summary, b))
    await say(sup.room_id, "!oncall")
    await sup.expect(text("en", "oncall.list", names="Ana"))
    await say(sup.room_id, "!whatever")
    await sup.expect(help_text("supervisor"))

    # A second counselor arrives; the waiting client gets them.
    await hire(bot, staff.budi, "Budi", capacity=2)
    await waiting_dm.expect(text("en", "waitlist.assigned", counselor_name="Budi"))

    old = await engagement(bot, first.client)
    await say(sup.room_id, "!reassign")
    await sup.expect(text("en", "reassign.usage"))
    await say(sup.room_id, f"!reassign !nope:example.org {staff.budi.session.user_id}")
    await sup.expect(text("en", "reassign.unknown_room"))
    await say(sup.room_id, f"!reassign {old.room_id} {staff.budi.session.user_id}")
    await sup.expect(text("en", "reassign.done", counselor_name="Budi"))
    await first.dm.expect(text("en", "counselor.rematched", counselor_name="Budi"))
    new = await engagement(bot, first.client)
    assert new.counselor_id == staff.budi.session.user_id and new.room_id != old.room_id
    await until(
        lambda: not first.client.joined(old.room_id, staff.ana.session.user_id),
        what="Ana leaves the old room",
    )

    await say(sup.room_id, "!queue")
    summary = text(
        "en",
        "queue.summary",
        awaiting=0,
        oldest_wait="§",
        waitlisted=0,
        oldest_waitlist="-",
        high_risk=0,
    )
    await sup.expect(lambda b: fits(summary, b))


async def _awaiting(store, room_id: str) -> bool:
    eng = await store.engagement_by_room(room_id)
    return eng is not None and eng.awaiting_since is not None


# ---------------------------------------------------------------------- roster


async def test_a_removed_counselors_client_is_rematched_with_a_note(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana", specialties=("anxiety",))
    await hire(bot, staff.budi, "Budi", specialties=("career",))
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated = await seat_client(bot, client, "Ana")
    old = await engagement(bot, client)

    await bot.bridge.store.deactivate_counselor(staff.ana.session.user_id)
    await seated.dm.expect(text("en", "counselor.removed"))
    await seated.dm.expect(text("en", "counselor.rematched", counselor_name="Budi"))
    new = await engagement(bot, client)
    assert new.status == "active" and new.counselor_id == staff.budi.session.user_id
    await until(
        lambda: not client.joined(old.room_id, staff.ana.session.user_id),
        what="the removed counselor leaves the room",
    )
    await until(lambda: client.joined(new.room_id, client.session.user_id), what="new room")
    # Exactly once, though the upkeep runs every tick.
    assert await seated.dm.quiet(1.5) == []


# ---------------------------------------------------------------------- odd input


async def test_odd_messages_after_the_intake_get_friendly_answers_and_change_nothing(
    bot, staff, homeserver, user_factory, tmp_path, clients
):
    await hire(bot, staff.ana, "Ana")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    seated: Seated = await seat_client(bot, client, "Ana")
    store = bot.bridge.store
    before = await store.get_client(client.session.user_id)
    dm = seated.dm

    for odd in (
        "hi, how does this work?",
        "[red]\x1b[31mhello[/red]",
        "<script>alert(1)</script>",
        "!!!",
    ):
        await dm.send(odd)
        assert await next_message(dm) == text("en", "unknown_command"), repr(odd)
    await dm.send("x" * (POLICY.service.max_message_chars + 1))
    assert await next_message(dm) == text("en", "message_too_long")
    await dm.send("HELP")
    assert await next_message(dm) == help_text("client")
    await dm.send("status")
    status = await next_message(dm)
    assert status.startswith(
        text(
            "en",
            "status.active",
            counselor_name="Ana",
            credentials=counselor_record("@x:y", "Ana").credentials,
        )
    )
    assert await dm.quiet(1.0) == []

    after = await store.get_client(client.session.user_id)
    assert after.intake == before.intake and after.profile == before.profile
    assert after.pending is None
    assert (await engagement(bot, client)).status == "active"
    assert client.undecryptable == []


# ---------------------------------------------------------------------- late joiners


async def test_people_who_accept_invitations_late_still_read_the_first_messages(
    bot, homeserver, user_factory, tmp_path, clients
):
    # Rooms keep history from the join on: what the bot says before someone accepts
    # the invitation must wait for them, or they never see the intro or the brief.
    counselor = await new_client(homeserver, user_factory, tmp_path, clients)
    counselor.auto_join = False
    await hire(bot, counselor, "Wulan")
    client = await new_client(homeserver, user_factory, tmp_path, clients)
    client.auto_join = False
    dm = await open_dm(client, bot.user_id)
    await walk_intake(dm, pseudonym="Lark")
    await dm.send("auto")
    await dm.expect(text("en", "intake.matched", counselor_name="Wulan"))
    eng = await engagement(bot, client)
    invited = client.session.client.invited_rooms
    await until(lambda: eng.room_id in invited, what="the client sees the invitation")
    assert await dm.quiet(1.0) == []  # time for anything that would be sent now

    await client.session.client.join(eng.room_id)
    await Chat(client, eng.room_id, bot.user_id).expect(
        lambda b: "Wulan" in b and POLICY.crisis_line("en", COUNTRY) in b
    )
    case = await case_channel(bot, counselor)
    await counselor.session.client.join(case.room_id)
    await case.expect(text("en", "case.welcome"))
    await case.expect(lambda b: "Lark" in b and link(eng.room_id) in b)
    assert client.undecryptable == [] and counselor.undecryptable == []
