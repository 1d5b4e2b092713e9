"""The E2EE session against a real Synapse, with real encrypted clients on both sides."""

from __future__ import annotations

import logging
import uuid

import pytest

from e2ecounsel.matrix import ConnectionState
from tests.integration.matrixkit import Recorder, files_containing, until

N = 200


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    """Every log line any logger writes during the test, at DEBUG."""
    cap = _Capture()
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(cap)
    yield cap
    root.removeHandler(cap)
    root.setLevel(old)


async def test_exchange_restart_and_new_device(homeserver, user_factory, tmp_path, all_logs):
    base = homeserver.info.base_url
    (alice_id, alice_pw), (bob_id, bob_pw) = await user_factory("alice"), await user_factory("bob")
    canary = f"canary-{uuid.uuid4().hex}"
    alice = await Recorder.connect(
        base, alice_id, alice_pw, tmp_path / "alice", b"a" * 32, cross_sign=False
    )
    bob = await Recorder.connect(
        base, bob_id, bob_pw, tmp_path / "bob", b"b" * 32, cross_sign=False
    )
    extra: Recorder | None = None
    try:
        room = await alice.create_encrypted_room([bob_id])
        await until(
            lambda: bob.joined(room, bob_id) and alice.joined(room, bob_id), what="bob joins"
        )

        for i in range(N):
            await alice.session.send_text(room, f"a{i} {canary}")
            await bob.session.send_text(room, f"b{i} {canary}")
        await until(
            lambda: (
                len(bob.bodies(room, sender=alice_id)) == N
                and len(alice.bodies(room, sender=bob_id)) == N
            ),
            timeout=60,
            what="all 2x200 messages decrypted",
        )
        assert alice.undecryptable == [] and bob.undecryptable == []
        assert bob.bodies(room, sender=alice_id) == [f"a{i} {canary}" for i in range(N)]

        # Bob restarts: same store, no password, same device.
        bob_device = bob.session.device_id
        await bob.close()
        bob = await Recorder.connect(
            base, bob_id, None, tmp_path / "bob", b"b" * 32, cross_sign=False
        )
        assert bob.session.device_id == bob_device
        # The room's encryption was kept in nio's store (saved for the syncs that name
        # an encrypted room, and only those): the restarted session knows it at once.
        assert room in bob.session.client.store.load_encrypted_rooms()

        # Alice adds a second device mid-conversation.
        extra = await Recorder.connect(
            base, alice_id, alice_pw, tmp_path / "alice2", b"c" * 32, cross_sign=False
        )
        assert extra.session.device_id != alice.session.device_id
        await until(lambda: room in extra.session.client.rooms, what="second device sees room")

        for i in range(20):
            await bob.session.send_text(room, f"after-{i} {canary}")
            await alice.session.send_text(room, f"alice-after-{i} {canary}")
        want_bob = [f"after-{i} {canary}" for i in range(20)]
        await until(
            lambda: (
                [b for b in alice.bodies(room, sender=bob_id) if b.startswith("after-")] == want_bob
                and [b for b in extra.bodies(room, sender=bob_id) if b.startswith("after-")]
                == want_bob
                and len(
                    [b for b in bob.bodies(room, sender=alice_id) if b.startswith("alice-after")]
                )
                == 20
                and len(
                    [b for b in extra.bodies(room, sender=alice_id) if b.startswith("alice-after")]
                )
                == 20
            ),
            timeout=60,
            what="messages after restart and new device",
        )
        # The second device was not present for the first 400 messages (history
        # before it joined is not shared), but everything sent since decrypts.
        assert alice.undecryptable == [] and bob.undecryptable == []
        late = {eid for _room, eid in extra.undecryptable}
        after_ids = {m.event_id for m in alice.messages if "after-" in m.body}
        assert not late & after_ids
    finally:
        for rec in (alice, bob, extra):
            if rec is not None:
                await rec.close()

    needle = canary.encode()
    assert files_containing(homeserver.info.data_dir, needle) == []
    assert not [line for line in all_logs.lines if canary in line]
    # Our own stores hold no plaintext either (crypto store and sync state).
    assert files_containing(tmp_path, needle) == []


async def test_sync_survives_homeserver_restart(fresh_homeserver, tmp_path):
    hs = fresh_homeserver
    base = hs.info.base_url
    await hs.register_user("carol", "carol-pw")
    await hs.register_user("dave", "dave-pw")
    server = hs.info.server_name
    carol = await Recorder.connect(
        base, f"@carol:{server}", "carol-pw", tmp_path / "c", b"c" * 32, cross_sign=False
    )
    dave = await Recorder.connect(
        base, f"@dave:{server}", "dave-pw", tmp_path / "d", b"d" * 32, cross_sign=False
    )
    states: list[ConnectionState] = []
    carol.session.state_listeners.append(states.append)
    try:
        room = await dave.create_encrypted_room([f"@carol:{server}"])
        await until(lambda: carol.joined(room, f"@carol:{server}"), what="carol joins")
        await dave.session.send_text(room, "before")
        await until(lambda: carol.bodies(room) == ["before"], what="first message")

        await hs.stop()
        await until(
            lambda: ConnectionState.RECONNECTING in states, timeout=60, what="carol notices"
        )
        assert not carol.session._sync_task.done()  # the loop is alive, not crashed
        await hs.start()
        for i in range(5):
            await dave.session.send_text(room, f"meanwhile {i}")
        await until(
            lambda: carol.bodies(room) == ["before"] + [f"meanwhile {i}" for i in range(5)],
            timeout=90,
            what="messages sent while carol was reconnecting",
        )
        assert carol.session.state is ConnectionState.ONLINE
        assert carol.undecryptable == []
    finally:
        await carol.close()
        await dave.close()


async def test_lazy_restart_skips_full_state_and_fills_gaps(homeserver, user_factory, tmp_path):
    """A lazy restart asks for deltas only: a quiet room stays unloaded until it is sent
    to, and a room whose timeline has a gap gets its missed events back, in order."""
    base = homeserver.info.base_url
    (bot_id, bot_pw), (peer_id, peer_pw) = await user_factory("lazy"), await user_factory("peer")
    lazy = {
        "resume_lazily": True,
        "sync_filter": {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}},
    }
    bot = await Recorder.connect(
        base, bot_id, bot_pw, tmp_path / "bot", b"l" * 32, cross_sign=False, **lazy
    )
    peer = await Recorder.connect(
        base, peer_id, peer_pw, tmp_path / "peer", b"p" * 32, cross_sign=False
    )
    try:
        busy = await peer.create_encrypted_room([bot_id])
        quiet = await peer.create_encrypted_room([bot_id])
        await until(
            lambda: peer.joined(busy, bot_id) and peer.joined(quiet, bot_id), what="bot joins"
        )
        await peer.session.send_text(busy, "before")
        await until(lambda: bot.bodies(busy) == ["before"], what="bot reads the first message")
        await bot.close()

        missed = [f"while down {i}" for i in range(7)]
        for body in missed:
            await peer.session.send_text(busy, body)
        bot = await Recorder.connect(
            base, bot_id, None, tmp_path / "bot", b"l" * 32, cross_sign=False, **lazy
        )
        # The first sync after the restart delivered all seven, though its limit is two.
        assert bot.bodies(busy, sender=peer_id) == missed
        assert bot.undecryptable == []
        rooms = bot.session.client.rooms
        assert quiet not in rooms, "a quiet room came with the first sync: full state?"
        assert rooms[busy].encrypted and peer_id in rooms[busy].users

        await bot.session.send_text(quiet, "to the quiet room")
        await until(
            lambda: peer.bodies(quiet, sender=bot_id) == ["to the quiet room"],
            what="the peer reads what the bot sent to the quiet room",
        )
        assert bot.session.client.rooms[quiet].encrypted
        assert peer.undecryptable == []
    finally:
        await bot.close()
        await peer.close()
