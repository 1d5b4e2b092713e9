"""Interop with an implementation we did not write: matrix-js-sdk + Rust crypto.

The JS client runs in only-signed-devices isolation mode, as Element does since
MSC4153: it sends no room keys to devices their owner has not cross-signed and
refuses their messages. Each test talks to a real Synapse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2ecounsel.homeserver import EmbeddedHomeserver
from e2ecounsel.matrix.crosssigning import CrossSigning, CrossSigningError, query_cross_signing
from e2ecounsel.matrix.secretstorage import RecoveryKeyError, encode_recovery_key
from e2ecounsel.matrix.trust import IdentityChange, TrustPolicy
from e2ecounsel.sealing import Sealer
from tests.conftest import MakeUser
from tests.interop.conftest import StartJs
from tests.interop.jsclient import JsClient
from tests.interop.peers import NioPeer, SessionPeer, until

Peer = NioPeer | SessionPeer


async def _js_sees_device_signed(js: JsClient, user_id: str, device_id: str) -> None:
    async def signed() -> bool:
        status = await js.call("device_status", user=user_id, device=device_id)
        return bool(status["signed_by_owner"])

    await until(signed, timeout=30, what="the JS client to see our device as cross-signed")


async def _converse(js: JsClient, js_user: str, ours: Peer) -> None:
    """JS opens an encrypted DM; a message each way; both sides decrypt, no warnings."""
    room = (await js.call("create_dm", user=ours.user_id))["room_id"]
    await js.call("wait_joined", room=room, user=ours.user_id, timeout=60)
    await _js_sees_device_signed(js, ours.user_id, ours.device_id)

    await js.call("send", room=room, text="hello from the js client")
    seen = await ours.wait_text(room, js_user, "hello from the js client")
    assert seen.event.decrypted
    assert ours.policy is not None
    report = await ours.policy.apply(ours.client, room)
    assert report.excluded == []
    assert ours.policy.is_event_trusted(seen.event), "the JS device is cross-signed"

    await ours.send_text(room, "reply from e2ecounsel")
    got = await js.call(
        "wait_message", room=room, sender=ours.user_id, body="reply from e2ecounsel", timeout=60
    )
    assert got["decrypted"] and got["encrypted"], got
    assert got["body"] == "reply from e2ecounsel"
    assert got["sender_device"] == ours.device_id
    assert got["sender_device_signed"] is True
    assert got["shield_reason"] not in ("UNSIGNED_DEVICE", "UNKNOWN_DEVICE"), got
    assert got["shield_colour"] != "RED", got


@pytest.mark.parametrize("layer", ["bot-nio", "tui-session"])
async def test_js_client_and_our_cross_signed_device_talk_both_ways(
    layer: str,
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
    sealer: Sealer,
) -> None:
    base_url = homeserver.info.base_url
    our_user, our_pw = await user_factory("bot" if layer == "bot-nio" else "counselor")
    js_user, js_pw = await user_factory("client")

    peer: Peer
    if layer == "bot-nio":
        peer = NioPeer(base_url, our_user, tmp_path / "nio", sealer)
    else:
        peer = SessionPeer(base_url, our_user, tmp_path / "session", sealer)
    try:
        await peer.login(our_pw)
        cross = CrossSigning(peer.client, tmp_path / "cross_signing.sealed", sealer)
        status = await cross.ensure(password=our_pw)
        assert status.created and status.device_cross_signed
        again = await CrossSigning(peer.client, tmp_path / "cross_signing.sealed", sealer).ensure(
            password=None
        )
        assert not again.created and again.master_key == status.master_key, "no new identity"

        policy = TrustPolicy(known_identities=tmp_path / "identities.json")
        if isinstance(peer, SessionPeer):
            peer.use_policy(policy)
        else:
            peer.policy = policy
        peer.start()

        js = await js_factory("client")
        login = await js.call("login", base_url=base_url, user_id=js_user, password=js_pw)
        assert login["cross_signing_ready"]
        await _converse(js, js_user, peer)
    finally:
        await peer.close()


async def test_account_set_up_in_js_signs_our_device_with_its_recovery_key(
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
    sealer: Sealer,
) -> None:
    base_url = homeserver.info.base_url
    user, pw = await user_factory("counselor")
    js = await js_factory("counselor-js")
    login = await js.call(
        "login", base_url=base_url, user_id=user, password=pw, secret_storage=True
    )
    recovery_key = login["recovery_key"]
    assert recovery_key and login["private_keys_in_secret_storage"], login

    peer = SessionPeer(base_url, user, tmp_path / "session", sealer)
    try:
        await peer.login(pw)
        key_file = tmp_path / "cross_signing.sealed"
        cross = CrossSigning(peer.client, key_file, sealer)

        with pytest.raises(CrossSigningError, match="recovery key"):
            await cross.ensure(password=pw)
        with pytest.raises(RecoveryKeyError):
            await cross.ensure(password=pw, recovery_key=encode_recovery_key(bytes(32)))
        assert not key_file.exists(), "a wrong recovery key changes nothing"
        assert not await cross.is_device_cross_signed(user, peer.device_id)

        status = await cross.ensure(password=None, recovery_key=recovery_key)
        assert status.imported and not status.created and status.device_cross_signed
        idents = await query_cross_signing(peer.client, [user])
        assert idents[user].master_key == status.master_key, "the JS identity was kept"

        policy = TrustPolicy()
        peer.use_policy(policy)
        peer.start()
        # a room of the account alone: the JS device of the same account must accept us
        resp = await peer.client.room_create(
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ]
        )
        room = resp.room_id
        # Room creation is not atomic for sync: the join can show up before
        # m.room.encryption, and nio would then send in the clear.
        await until(
            lambda: room in peer.client.rooms and peer.client.rooms[room].encrypted,
            what="the room's encryption state in sync",
        )
        await _js_sees_device_signed(js, user, peer.device_id)
        await peer.send_text(room, "from our device, signed with the recovery key")
        got = await js.call(
            "wait_message",
            room=room,
            sender=user,
            body="from our device, signed with the recovery key",
            timeout=60,
        )
        assert got["decrypted"] and got["encrypted"], got
        assert got["sender_device_signed"] is True, got
        assert got["shield_reason"] not in ("UNSIGNED_DEVICE", "UNKNOWN_DEVICE"), got
    finally:
        await peer.close()


async def test_js_client_refuses_our_device_left_unsigned(
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
    sealer: Sealer,
) -> None:
    """A second device of an account with cross-signing, deliberately not signed."""
    base_url = homeserver.info.base_url
    our_user, our_pw = await user_factory("bot")
    js_user, js_pw = await user_factory("client")

    first = NioPeer(base_url, our_user, tmp_path / "first", sealer)
    await first.login(our_pw)
    status = await CrossSigning(first.client, tmp_path / "cs.sealed", sealer).ensure(
        password=our_pw
    )
    assert status.device_cross_signed and status.recovery_key
    await first.close()

    peer = NioPeer(base_url, our_user, tmp_path / "second", sealer)  # never cross-signed
    try:
        await peer.login(our_pw)
        peer.policy = TrustPolicy()
        peer.start()
        js = await js_factory("client")
        await js.call("login", base_url=base_url, user_id=js_user, password=js_pw)
        room = (await js.call("create_dm", user=our_user))["room_id"]
        await js.call("wait_joined", room=room, user=our_user, timeout=60)
        status_js = await js.call("device_status", user=our_user, device=peer.device_id)
        assert status_js["known"] and not status_js["signed_by_owner"]

        await peer.send_text(room, "from an unsigned device")
        got = await js.call("wait_message", room=room, sender=our_user, timeout=30)
        assert not got["decrypted"], f"the JS client must refuse an unsigned device: {got}"
        assert got["failure"] == "UNSIGNED_SENDER_DEVICE", got

        await js.call("send", room=room, text="not for unsigned devices")
        await until(lambda: bool(peer.undecryptable), timeout=30, what="the JS message to arrive")
        assert "not for unsigned devices" not in [s.body for s in peer.texts]

        # The same second machine, given the recovery key our first device created.
        second = await CrossSigning(peer.client, tmp_path / "cs2.sealed", sealer).ensure(
            password=None, recovery_key=status.recovery_key
        )
        assert second.imported and second.device_cross_signed
        assert second.master_key == status.master_key
        await _js_sees_device_signed(js, our_user, peer.device_id)
    finally:
        await peer.close()


async def test_our_policy_excludes_a_js_device_its_owner_did_not_sign(
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
    sealer: Sealer,
) -> None:
    """Our side of MSC4153: no room keys for an unsigned device, unless policy is permissive."""
    base_url = homeserver.info.base_url
    our_user, our_pw = await user_factory("bot")
    js_user, js_pw = await user_factory("client")
    peer = NioPeer(base_url, our_user, tmp_path / "nio", sealer)
    try:
        await peer.login(our_pw)
        await CrossSigning(peer.client, tmp_path / "cs.sealed", sealer).ensure(password=our_pw)
        peer.policy = TrustPolicy()
        peer.start()
        js = await js_factory("client")
        login = await js.call(
            "login", base_url=base_url, user_id=js_user, password=js_pw, cross_signing=False
        )
        js_device = login["device_id"]

        room = (await js.call("create_dm", user=our_user))["room_id"]
        await js.call("wait_joined", room=room, user=our_user, timeout=60)
        await peer.send_text(room, "keys withheld")
        report = await peer.policy.apply(peer.client, room)
        assert report.excluded == [(js_user, js_device)]
        assert report.excluded_users() == {js_user}
        got = await js.call("wait_message", room=room, sender=our_user, timeout=5)
        assert not got["decrypted"], got

        peer.policy = TrustPolicy("permissive")
        room2 = (await js.call("create_dm", user=our_user))["room_id"]
        await js.call("wait_joined", room=room2, user=our_user, timeout=60)
        await peer.send_text(room2, "shared in permissive mode")
        report = await peer.policy.apply(peer.client, room2)
        assert report.excluded == [] and report.unsigned_included == [(js_user, js_device)]
        got = await js.call(
            "wait_message", room=room2, sender=our_user, body="shared in permissive mode"
        )
        assert got["decrypted"], got
    finally:
        await peer.close()


async def test_js_client_unlocks_the_secret_storage_we_created(
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
    sealer: Sealer,
) -> None:
    """Our secret storage is Element's format: matrix-js-sdk signs itself from it."""
    base_url = homeserver.info.base_url
    user, pw = await user_factory("counselor")
    peer = NioPeer(base_url, user, tmp_path / "nio", sealer)
    try:
        await peer.login(pw)
        status = await CrossSigning(peer.client, tmp_path / "cs.sealed", sealer).ensure(password=pw)
        assert status.recovery_key
    finally:
        await peer.close()
    js = await js_factory("same-account")
    login = await js.call(
        "login",
        base_url=base_url,
        user_id=user,
        password=pw,
        cross_signing=False,
        recovery_key=status.recovery_key,
    )
    assert login["master_key"] == status.master_key, "the JS device kept our identity"
    assert login["own_device_signed"] and login["cross_signing_ready"], login


async def test_identity_change_of_a_js_user_is_reported(
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
    sealer: Sealer,
) -> None:
    base_url = homeserver.info.base_url
    our_user, our_pw = await user_factory("bot")
    js_user, js_pw = await user_factory("client")
    js = await js_factory("client")
    first = (await js.call("login", base_url=base_url, user_id=js_user, password=js_pw))[
        "master_key"
    ]
    peer = NioPeer(base_url, our_user, tmp_path / "nio", sealer)
    changes: list[IdentityChange] = []
    try:
        await peer.login(our_pw)
        policy = TrustPolicy(
            known_identities=tmp_path / "ids.json", on_identity_change=changes.append
        )
        assert (await policy.apply_users(peer.client, [js_user])).identity_changes == []
        assert policy.known_master_key(js_user) == first

        second = (await js.call("reset_identity"))["master_key"]
        assert second != first
        report = await TrustPolicy(known_identities=tmp_path / "ids.json").apply_users(
            peer.client, [js_user]
        )
        assert report.identity_changes == [IdentityChange(js_user, first, second)]
        await policy.apply_users(peer.client, [js_user])
        assert changes == [IdentityChange(js_user, first, second)]
    finally:
        await peer.close()
