"""The trust cache and our own account: Synapse names it in most syncs without any
change (it counts lazy-loaded member state as joins); a real change is still seen."""

from __future__ import annotations

import secrets

from e2ecounsel.matrix.trust import TrustPolicy
from tests.integration.matrixkit import Recorder, until

# As the bridge syncs: with lazy-loaded members.
LAZY = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 50}}}


async def _bot(homeserver, user_factory, tmp_path) -> tuple[Recorder, TrustPolicy, str]:
    bot_id, bot_pw = await user_factory("ownbot")
    bot = await Recorder.connect(
        homeserver.info.base_url,
        bot_id,
        bot_pw,
        tmp_path / "bot",
        secrets.token_bytes(32),
        start=False,
        sync_filter=LAZY,
    )
    policy = TrustPolicy()
    bot.session.use_trust(policy)
    bot.session.start()
    return bot, policy, bot_pw


def _upkeep_idle(bot: Recorder) -> bool:
    task = bot.session._upkeep_task
    return task is None or task.done()


async def test_steady_talk_in_several_rooms_asks_nothing_about_our_own_keys(
    homeserver, user_factory, tmp_path
):
    bot, policy, _pw = await _bot(homeserver, user_factory, tmp_path)
    clients: list[Recorder] = []
    try:
        rooms: list[str] = []
        for i in range(3):
            user_id, password = await user_factory(f"owntalk{i}")
            client = await Recorder.connect(
                homeserver.info.base_url,
                user_id,
                password,
                tmp_path / f"c{i}",
                secrets.token_bytes(32),
            )
            clients.append(client)
            room = await client.create_encrypted_room([bot.session.user_id])
            await until(lambda r=room, c=client: c.joined(r, bot.session.user_id), what="join")
            rooms.append(room)
        for room, client in zip(rooms, clients, strict=True):  # keys shared, sessions made
            await bot.session.send_text(room, "hello")
            await until(lambda c=client: "hello" in c.bodies(), what="first message")
            await client.session.send_text(room, "hi")
        await until(lambda: bot.bodies().count("hi") == len(rooms), what="first replies")
        await until(lambda: _upkeep_idle(bot), what="upkeep done")
        settled = policy.queries

        # The bot speaks in one room after the other: Synapse sends its membership of
        # each room again and again, and names the bot in device_lists.changed.
        for turn in range(4):
            for room, client in zip(rooms, clients, strict=True):
                await bot.session.send_text(room, f"turn {turn}")
                await client.session.send_text(room, f"answer {turn}")
        await until(
            lambda: (
                all("turn 3" in c.bodies() for c in clients)
                and bot.bodies().count("answer 3") == len(rooms)
            ),
            what="every turn across",
        )
        await until(lambda: _upkeep_idle(bot), what="upkeep done")
        assert policy.queries == settled, "our own keys were looked up without any change"
        assert all(c.undecryptable == [] for c in clients)
    finally:
        for client in clients:
            await client.close()
        await bot.close()


async def test_a_new_device_of_our_own_account_is_still_looked_up(
    homeserver, user_factory, tmp_path
):
    bot, policy, password = await _bot(homeserver, user_factory, tmp_path)
    user_id, client_pw = await user_factory("ownwatch")
    client = await Recorder.connect(
        homeserver.info.base_url, user_id, client_pw, tmp_path / "c", secrets.token_bytes(32)
    )
    second: Recorder | None = None
    try:
        room = await client.create_encrypted_room([bot.session.user_id])
        await until(lambda: client.joined(room, bot.session.user_id), what="join")
        await bot.session.send_text(room, "hello")
        await until(lambda: "hello" in client.bodies(), what="first message")
        await until(lambda: _upkeep_idle(bot), what="upkeep done")

        second = await Recorder.connect(
            homeserver.info.base_url,
            bot.session.user_id,
            password,
            tmp_path / "bot2",
            secrets.token_bytes(32),
            start=False,
            cross_sign=False,
        )
        new_device = second.session.device_id
        store = bot.session.client.device_store
        await until(
            lambda: new_device in {d.id for d in store.active_user_devices(bot.session.user_id)},
            what="the bot's new device looked up",
        )
        # Not cross-signed: it gets no room keys from the bot.
        await bot.session.send_text(room, "after the new device")
        assert not policy.is_device_trusted(bot.session.user_id, new_device)
    finally:
        if second is not None:
            await second.close()
        await client.close()
        await bot.close()
