"""Signing in to the counselor app on an account that already has cross-signing
(set up on another device): the recovery key signs the new device; a wrong one
is refused and changes nothing."""

from __future__ import annotations

import secrets

import pytest

from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.crosssigning import query_cross_signing
from e2ecounsel.sealing import Sealer
from tui.connect import SignInFailed, connect
from tui.notes import FAST_FOR_TESTS
from tui.settings import TuiSettings

PASSPHRASE = "a long passphrase for the notes"


async def test_recovery_key_signs_a_second_device_and_a_wrong_one_changes_nothing(
    homeserver, user_factory, tmp_path
):
    user_id, password = await user_factory("dewi")
    base = homeserver.info.base_url
    # The counselor's first device (say, another machine) set up cross-signing
    # and secret storage; it showed the recovery key once.
    first = MatrixSession(base, user_id, tmp_path / "first", Sealer(secrets.token_bytes(32)))
    await first.login(password)
    status = await first.ensure_cross_signing(password)
    recovery_key = status.recovery_key
    assert recovery_key and status.device_cross_signed

    settings = TuiSettings(
        data_dir=tmp_path / "tui", config_dir=tmp_path / "cfg", kdf=FAST_FOR_TESTS
    )
    try:
        wrong = recovery_key[:-4] + ("aaaa" if not recovery_key.endswith("aaaa") else "bbbb")
        with pytest.raises(SignInFailed, match="recovery key does not open"):
            await connect(
                settings,
                homeserver=base,
                user_id=user_id,
                passphrase=PASSPHRASE,
                password=password,
                recovery_key=wrong,
            )
        identity = (await query_cross_signing(first.client, [user_id]))[user_id]
        assert identity.master_key == status.master_key  # the identity was not replaced

        done = await connect(
            settings,
            homeserver=base,
            user_id=user_id,
            passphrase=PASSPHRASE,
            password=password,
            recovery_key=recovery_key,
        )
        try:
            device = done.session.device_id
            assert device != first.device_id
            identity = (await query_cross_signing(first.client, [user_id]))[user_id]
            assert identity.master_key == status.master_key
            assert identity.is_device_signed(device), "the new device is cross-signed"
            assert done.recovery_key is None  # nothing new to show: the identity is reused
        finally:
            await done.session.close()
    finally:
        await first.close()
