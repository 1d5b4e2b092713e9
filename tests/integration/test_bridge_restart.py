"""The bridge after a restart without a full-state sync: rooms that stayed quiet are
loaded when the bot must write to them, and what it writes there decrypts."""

from __future__ import annotations

from tests.integration.bridgekit import (
    POLICY,
    Chat,
    counselor_record,
    make_bot,
    person,
    seat_client,
    supervisors_room,
    text,
)
from tests.integration.matrixkit import until


async def test_a_crisis_after_a_restart_pages_into_rooms_quiet_since(
    homeserver, user_factory, tmp_path
):
    ana = await person(homeserver, user_factory, tmp_path, "ana")
    sup = await person(homeserver, user_factory, tmp_path, "sup")
    client = await person(homeserver, user_factory, tmp_path, "client")
    env = await make_bot(homeserver, tmp_path)
    try:
        env.supervisors_room = await supervisors_room(sup, env.user_id)
        bridge = await env.start()
        await until(lambda: sup.joined(env.supervisors_room, env.user_id), what="bot joins")
        await bridge.store.add_counselor(counselor_record(ana.session.user_id, "Ana"))
        seated = await seat_client(env, client, "Ana")
        counselor = await bridge.store.get_counselor(ana.session.user_id)
        assert counselor is not None and counselor.case_room_id is not None
        case_room = counselor.case_room_id
        await until(lambda: ana.joined(case_room, ana.session.user_id), what="ana joins")

        bridge = await env.restart()
        # Nothing was said in the supervisors' room since the bot joined: not loaded.
        # (The case channel may be: the bot's last messages there came with this sync.)
        assert env.supervisors_room not in bridge.session.client.rooms, "a full-state sync?"

        await seated.dm.send("urgent")
        country = POLICY.crisis.countries[0].code
        lines = POLICY.crisis_reply("en", country).strip()[:80]
        await seated.dm.expect(lambda body: lines in body)
        page = text("en", "page.urgent", page=1)
        await Chat(ana, case_room, env.user_id).expect(page)
        await Chat(sup, env.supervisors_room, env.user_id).expect(page)
        assert ana.undecryptable == [] and sup.undecryptable == []
    finally:
        await env.stop()
        for who in (ana, sup, client):
            await who.close()
