"""``kill -9`` at every step of a placement and of an erasure loses and repeats nothing.

The bridge runs as a process of its own. For each crash point (named where it is
passed in the bridge: after a commit, after a room request, after a room was
created, after a send ...) one client walks the intake, the bridge is restarted
with that point armed, the client sends the last answer, and the bridge kills
itself with SIGKILL when it gets there. Restarted, it must finish the job: one
session room per engagement, one case channel per counselor, the intro and the
brief decrypted exactly once. The erasures are killed the same way and must end
complete: every bot message redacted (the goodbye excepted), the counselor
removed, the bot gone from the rooms, nothing left in the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from tests.integration.bridgekit import (
    Chat,
    bot_event_ids,
    counselor_record,
    fetch_event,
    membership,
    open_dm,
    person,
    text,
    walk_intake,
)
from tests.integration.matrixkit import Recorder, until
from tests.journeys.conftest import BotProcess, poll

PLACEMENT = [
    ("committed:place", 1),  # the last intake answer and the placement job committed
    ("sent", 1),  # the first message sent (the client's note), not yet marked sent
    ("engagement.opened", 1),
    ("room.requested", 1),  # the session room: about to be created
    ("room.created", 1),  # the session room exists, nothing recorded yet
    ("room.requested", 2),  # the case channel
    ("room.created", 2),
    ("case_room.recorded", 1),
    ("assigned", 1),  # assignment, intro and brief committed, nothing sent
    ("sent", 2),  # then the case channel's welcome, the brief, the intro
    ("sent", 3),
    ("sent", 4),
]
ERASURE = [
    ("committed:erase.about", 1),  # deletion, goodbye and clean-up jobs committed
    ("sent", 1),  # the goodbye sent, not yet marked sent
    ("erase.redacted", 1),  # the brief in the case channel
    ("erase.redacted", 2),  # the first message in the session room
    ("erase.kicked", 1),
    ("erase.left", 1),
    ("erase.redacted", 4),  # in the DM, after leaving the session room
    ("erase.left", 2),
]


@dataclass
class Placed:
    client: Recorder
    counselor: Recorder
    dm: Chat
    name: str
    engagement: int
    room_id: str
    case_room: str


def other_rooms(who: Recorder, bot_id: str, but: set[str]) -> list[str]:
    """Rooms ``who`` is in with the bot, except ``but``."""
    return [
        room_id
        for room_id, room in who.session.client.rooms.items()
        if room_id not in but and bot_id in room.users
    ]


def count(who: Recorder, room_id: str, bot_id: str, want) -> int:
    return sum(1 for body in who.bodies(room_id, sender=bot_id) if want(body))


@dataclass
class Tally:
    lost: int = 0
    duplicate_rooms: int = 0
    duplicate_messages: int = 0


async def placement_killed_at(
    bot: BotProcess,
    homeserver,
    user_factory,
    tmp_path,
    n: int,
    point: str,
    nth: int,
    placed: list[Placed],
    made: list[Recorder],
    tally: Tally,
) -> None:
    bot_id = bot.user_id
    name = f"Counselor{n}"
    counselor = await person(homeserver, user_factory, tmp_path, f"co{n}")
    client = await person(homeserver, user_factory, tmp_path, f"cl{n}")
    made += [counselor, client]
    async with bot.store() as store:
        for earlier in placed:  # full: only the new counselor can be matched
            c = await store.get_counselor(earlier.counselor.session.user_id)
            assert c is not None
            await store.update_counselor(replace(c, capacity=1))
        await store.add_counselor(counselor_record(counselor.session.user_id, name))
    await bot.start()
    dm = await open_dm(client, bot_id)
    await walk_intake(dm, pseudonym=f"Pseudo{n}")
    await bot.stop()

    await bot.start(point, nth)
    await dm.send("auto")
    assert await bot.killed(), f"crash point {point} #{nth} was never reached"
    await bot.start()

    def intro(body: str) -> bool:
        return name in body and "SIPP 1234-56" in body

    def brief(body: str) -> bool:
        return f"new client Pseudo{n}" in body

    def matched(body: str) -> bool:
        return body == text("en", "intake.matched", counselor_name=name)

    await until(
        lambda: any(
            count(client, r, bot_id, intro) for r in other_rooms(client, bot_id, {dm.room_id})
        ),
        timeout=90,
        what=f"the intro after a kill at {point} #{nth}",
    )
    await until(
        lambda: any(count(counselor, r, bot_id, brief) for r in counselor.session.client.rooms),
        timeout=60,
        what=f"the brief after a kill at {point} #{nth}",
    )
    await asyncio.sleep(2)  # anything sent twice arrives by now
    await bot.stop()
    async with bot.store() as store:
        eng = await store.current_engagement(client.session.user_id)
        c = await store.get_counselor(counselor.session.user_id)
        assert c is not None and c.case_room_id is not None
    if eng is None or eng.status != "active" or eng.room_id is None:
        tally.lost += 1
        return
    case_number = f"Case {eng.id}:"
    client_rooms = other_rooms(client, bot_id, {dm.room_id})
    counselor_rooms = other_rooms(counselor, bot_id, set())
    tally.duplicate_rooms += len(client_rooms) - 1 + len(counselor_rooms) - 2
    assert set(client_rooms) == {eng.room_id}, (point, nth, client_rooms)
    assert set(counselor_rooms) == {eng.room_id, c.case_room_id}, (point, nth)
    counts = (
        count(client, eng.room_id, bot_id, intro),
        count(counselor, c.case_room_id, bot_id, brief),
        count(counselor, c.case_room_id, bot_id, lambda b: b.startswith(case_number)),
        count(client, dm.room_id, bot_id, matched),
    )
    tally.duplicate_messages += sum(k - 1 for k in counts if k > 1)
    assert counts == (1, 1, 1, 1), (point, nth, counts)
    placed.append(Placed(client, counselor, dm, name, eng.id, eng.room_id, c.case_room_id))


async def erasure_killed_at(bot: BotProcess, p: Placed, point: str, nth: int, tally: Tally) -> None:
    bot_id = bot.user_id
    cid, coid = p.client.session.user_id, p.counselor.session.user_id
    await bot.start()
    await p.dm.send("erase")
    await p.dm.expect(lambda b: b.startswith(text("en", "erase.confirm")[:40]))
    await bot.stop()
    await bot.start(point, nth)
    await p.dm.send("yes")
    assert await bot.killed(), f"crash point {point} #{nth} was never reached"
    await bot.start()

    async def erased() -> bool:
        return (
            await membership(p.client, p.room_id, coid) == "leave"
            and await membership(p.client, p.room_id, bot_id) == "leave"
            and await membership(p.client, p.dm.room_id, bot_id) == "leave"
        )

    await poll(erased, what=f"the erasure after a kill at {point} #{nth}")
    released = text("en", "case.released", case=p.engagement)
    await until(
        lambda: released in p.counselor.bodies(p.case_room, sender=bot_id),
        what="the counselor's app is told to drop the client",
    )
    await asyncio.sleep(1)
    await bot.stop()
    copies = p.counselor.bodies(p.case_room, sender=bot_id).count(released)
    tally.duplicate_messages += max(copies - 1, 0)
    assert copies == 1, (point, nth, copies)
    in_room = bot_event_ids(p.client, p.room_id, bot_id)
    in_dm = bot_event_ids(p.client, p.dm.room_id, bot_id)
    briefs = [
        m.event_id
        for m in p.counselor.messages
        if m.room_id == p.case_room and m.sender == bot_id and "new client" in m.body
    ]
    assert in_room and len(in_dm) > 2 and briefs
    for room_id, who, ids in (
        (p.room_id, p.client, in_room),
        (p.dm.room_id, p.client, in_dm[:-1]),
        (p.case_room, p.counselor, briefs),
    ):
        for event_id in ids:
            event = await fetch_event(who, room_id, event_id)
            assert not event.get("content"), (point, nth, "not redacted")
    goodbye = await fetch_event(p.client, p.dm.room_id, in_dm[-1])
    assert goodbye.get("content"), "the goodbye stays readable"
    async with bot.store() as store:
        assert await store.get_client(cid) is None
        assert await store.pending_followups() == 0
        assert not await store.events_about(cid)


async def test_kill_9_at_every_step_of_placement_and_erasure(
    homeserver, user_factory, tmp_path
) -> None:
    bot_id, password = await user_factory("counsel")
    bot = BotProcess(homeserver.info.base_url, bot_id, password, tmp_path / "bot")
    made: list[Recorder] = []
    placed: list[Placed] = []
    tally = Tally()
    try:
        for n, (point, nth) in enumerate(PLACEMENT):
            await placement_killed_at(
                bot, homeserver, user_factory, tmp_path, n, point, nth, placed, made, tally
            )
        for k, (point, nth) in enumerate(ERASURE):
            await erasure_killed_at(bot, placed[k], point, nth, tally)
    finally:
        await bot.stop()
        for who in made:
            await who.close()
    print(
        f"kills done: {bot.kills} / intakes lost: {tally.lost}"
        f" / duplicate rooms: {tally.duplicate_rooms}"
        f" / duplicate messages: {tally.duplicate_messages}"
    )
    assert bot.kills == len(PLACEMENT) + len(ERASURE)
    assert (tally.lost, tally.duplicate_rooms, tally.duplicate_messages) == (0, 0, 0)


async def test_kill_9_right_after_a_switch_to_the_waiting_list_still_tells_the_client(
    homeserver, user_factory, tmp_path
) -> None:
    """The counselor leaves the roster, nobody else is free: the client goes on the
    waiting list. Killed right after that step committed, the bridge still tells them."""
    bot_id, password = await user_factory("counsel")
    bot = BotProcess(homeserver.info.base_url, bot_id, password, tmp_path / "bot")
    ana = await person(homeserver, user_factory, tmp_path, "ana")
    client = await person(homeserver, user_factory, tmp_path, "client")
    try:
        async with bot.store() as store:
            await store.add_counselor(counselor_record(ana.session.user_id, "Ana"))
        await bot.start()
        dm = await open_dm(client, bot_id)
        await walk_intake(dm)
        await dm.send("auto")
        await dm.expect(text("en", "intake.matched", counselor_name="Ana"))
        await bot.stop()
        async with bot.store() as store:
            await store.deactivate_counselor(ana.session.user_id)

        await bot.start("committed:retire")
        assert await bot.killed(), "the switch never committed"
        await bot.start()
        waitlisted = text("en", "counselor.removed_waitlisted", position=1)
        await dm.expect(waitlisted)
        await asyncio.sleep(1)
        assert dm.bot_messages().count(waitlisted) == 1
        await bot.stop()
        async with bot.store() as store:
            eng = await store.current_engagement(client.session.user_id)
            assert eng is not None and eng.status == "waiting"
            assert await store.pending_followups() == 0
    finally:
        await bot.stop()
        for who in (ana, client):
            await who.close()
