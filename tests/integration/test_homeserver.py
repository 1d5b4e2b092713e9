"""The embedded homeserver against a real Synapse: start, restart, registration gate, errors."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from e2ecounsel.errors import HomeserverError
from e2ecounsel.homeserver import EmbeddedHomeserver, UserExistsError, free_port, lookup_profile
from tests.conftest import MakeUser


async def _call(
    method: str,
    url: str,
    *,
    json: dict[str, Any] | None = None,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=json, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def _login(base_url: str, user_id: str, password: str) -> tuple[int, dict[str, Any]]:
    return await _call(
        "POST",
        f"{base_url}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        },
    )


async def test_start_stop_restart_keeps_accounts(
    fresh_homeserver: EmbeddedHomeserver,
) -> None:
    first = fresh_homeserver
    info = first.info
    status, body = await _call("GET", f"{info.base_url}/_matrix/client/versions")
    assert status == 200 and body["versions"]
    assert first.running and first.pid is not None
    assert first.startup_seconds is not None
    user_id = await first.register_user("restart-me", "correct horse battery")
    assert user_id == f"@restart-me:{info.server_name}"

    await first.stop()
    assert not first.running and first.pid is None
    await first.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        await _call("GET", f"{info.base_url}/_matrix/client/versions")

    # A new instance on the same data dir, no port given: it reuses the saved configuration.
    second = EmbeddedHomeserver(info.data_dir.parent)
    async with second:
        assert second.info == info
        status, body = await _login(info.base_url, user_id, "correct horse battery")
        assert status == 200, body
        assert body["user_id"] == user_id
        with pytest.raises(UserExistsError, match="already exists"):
            await second.register_user("restart-me", "another password")
        # Another process (`e2ecounsel user add`) reaches the running server from the data dir.
        bystander = EmbeddedHomeserver(info.data_dir.parent)
        assert await bystander.is_healthy()
        assert await bystander.register_user("added-later", "pw") == (
            f"@added-later:{info.server_name}"
        )
        assert not bystander.running
    assert not second.running
    assert not await second.is_healthy()


async def _sign_up(
    base: str, username: str, password: str, token: str
) -> tuple[int, dict[str, Any]]:
    """A client's sign-up as Element does it: validity check, token stage, dummy stage."""
    validity = f"{base}/_matrix/client/v1/register/m.login.registration_token/validity"
    status, body = await _call("GET", f"{validity}?token={token}")
    assert status == 200, body
    url = f"{base}/_matrix/client/v3/register"
    request = {"username": username, "password": password}
    status, body = await _call("POST", url, json=request)
    for stage in (
        {"type": "m.login.registration_token", "token": token},
        {"type": "m.login.dummy"},
    ):
        if status != 401 or "session" not in body:
            break
        status, body = await _call(
            "POST", url, json={**request, "auth": {**stage, "session": body["session"]}}
        )
    return status, body


def _in_a_day() -> int:
    return int((time.time() + 86400) * 1000)


async def test_registration_needs_a_valid_token(homeserver: EmbeddedHomeserver) -> None:
    base = homeserver.info.base_url
    url = f"{base}/_matrix/client/v3/register"
    request = {"username": "gate-test", "password": "a long enough password"}

    status, body = await _call("POST", url, json=request)
    assert status == 401
    assert body["flows"] and all(
        "m.login.registration_token" in flow["stages"] for flow in body["flows"]
    )
    session = body["session"]

    # No dummy shortcut and no guessing: both leave the account uncreated.
    status, body = await _call(
        "POST", url, json={**request, "auth": {"type": "m.login.dummy", "session": session}}
    )
    assert status == 401 and "user_id" not in body
    status, body = await _call(
        "POST",
        url,
        json={
            **request,
            "auth": {
                "type": "m.login.registration_token",
                "token": "not-the-token",
                "session": session,
            },
        },
    )
    assert status == 401 and "user_id" not in body

    token = await homeserver.create_registration_token(uses=1, expires_ms=_in_a_day())
    assert token.uses_allowed == 1 and len(token.token) >= 24
    # Letters and digits only: read out, typed on a phone, never taken for an option.
    # Synapse's own tokens hold "-._~" too: 20 of its tokens, 480 characters, without
    # any of those four would be a chance of about 1 in 10^13.
    more = [
        await homeserver.create_registration_token(uses=1, expires_ms=_in_a_day())
        for _ in range(19)
    ]
    assert all(t.token.isascii() and t.token.isalnum() for t in [token, *more]), more
    status, body = await _sign_up(base, "gate-test", "a long enough password", token.token)
    assert status == 200, body
    assert body["user_id"] == f"@gate-test:{homeserver.info.server_name}"
    assert body["access_token"]

    # One use only: the second sign-up with the same token is refused.
    status, body = await _sign_up(base, "gate-test-2", "a long enough password", token.token)
    assert status == 401 and "user_id" not in body
    listed = {t.token: t for t in await homeserver.registration_tokens()}
    assert listed[token.token].completed == 1
    assert not listed[token.token].valid(int(time.time() * 1000))


async def test_expired_and_revoked_tokens_open_nothing(homeserver: EmbeddedHomeserver) -> None:
    base = homeserver.info.base_url
    soon = await homeserver.create_registration_token(
        uses=5, expires_ms=int((time.time() + 1.5) * 1000)
    )
    revoked = await homeserver.create_registration_token(uses=5, expires_ms=_in_a_day())
    assert await homeserver.revoke_registration_token(revoked.token)
    assert not await homeserver.revoke_registration_token(revoked.token)
    assert revoked.token not in {t.token for t in await homeserver.registration_tokens()}
    status, body = await _sign_up(base, "revoked-user", "a long enough password", revoked.token)
    assert status == 401 and "user_id" not in body

    assert soon.expiry_ms is not None
    await asyncio.sleep(max(0.0, soon.expiry_ms / 1000 - time.time()) + 0.2)  # time passes
    status, body = await _sign_up(base, "late-user", "a long enough password", soon.token)
    assert status == 401 and "user_id" not in body


async def test_password_policy_refuses_short_passwords(homeserver: EmbeddedHomeserver) -> None:
    base = homeserver.info.base_url
    token = await homeserver.create_registration_token(uses=3, expires_ms=_in_a_day())
    for weak in ("x", "123456789"):
        status, body = await _sign_up(base, "weak-user", weak, token.token)
        assert status == 400 and body.get("errcode") == "M_PASSWORD_TOO_SHORT", body
    status, body = await _sign_up(base, "weak-user", "ten chars!", token.token)
    assert status == 200, body


async def test_sign_up_never_writes_the_token_to_the_log(
    fresh_homeserver: EmbeddedHomeserver,
) -> None:
    hs = fresh_homeserver
    token = await hs.create_registration_token(uses=1, expires_ms=_in_a_day())
    status, body = await _sign_up(
        hs.info.base_url, "logged-user", "a long enough password", token.token
    )
    assert status == 200, body
    await hs.stop()  # flushes Synapse's log
    log = hs.log_path.read_text(encoding="utf-8")
    # The sign-up itself is logged (the line Synapse writes with the token, now redacted).
    assert "m.login.registration_token" in log and "validity?token=<redacted>" in log
    assert token.token not in log
    assert token.token not in hs.console_log_path.read_text(encoding="utf-8")


async def test_admin_account_keeps_no_token(homeserver: EmbeddedHomeserver) -> None:
    await homeserver.registration_tokens()
    saved = json.loads((homeserver.info.data_dir / "admin.json").read_text())
    assert set(saved) == {"user_id", "password"}
    # Every admin call signed out again: the admin account has no device left.
    status, body = await _login(homeserver.info.base_url, saved["user_id"], saved["password"])
    assert status == 200, body
    token = body["access_token"]
    status, devices = await _call(
        "GET", f"{homeserver.info.base_url}/_matrix/client/v3/devices", token=token
    )
    assert status == 200 and len(devices["devices"]) == 1, devices
    await _call("POST", f"{homeserver.info.base_url}/_matrix/client/v3/logout", token=token)


async def test_admin_api_only_on_its_own_listener(homeserver: EmbeddedHomeserver) -> None:
    info = homeserver.info
    assert info.admin_url != info.base_url and info.admin_url.startswith("http://127.0.0.1:")
    for path in ("/_synapse/admin/v1/register", "/_synapse/admin/v1/server_version"):
        status, body = await _call("GET", f"{info.base_url}{path}")
        assert (status, body.get("errcode")) == (404, "M_UNRECOGNIZED"), (path, body)
    # The client API itself is untouched on the client listener.
    status, body = await _call("GET", f"{info.base_url}/_matrix/client/versions")
    assert status == 200 and body["versions"]
    status, body = await _call("GET", f"{info.admin_url}/_synapse/admin/v1/register")
    assert status == 200 and body["nonce"]


async def test_version_names_no_commit_and_federation_is_not_served(
    homeserver: EmbeddedHomeserver,
) -> None:
    status, body = await _call(
        "GET", f"{homeserver.info.admin_url}/_synapse/admin/v1/server_version"
    )
    assert status == 200
    assert body["server_version"] == importlib.metadata.version("matrix-synapse")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{homeserver.info.base_url}/_matrix/federation/v1/version") as resp,
    ):
        assert resp.status == 404
        assert "(" not in resp.headers.get("Server", "")


async def test_x_forwarded_only_behind_a_proxy(tmp_path: Path) -> None:
    EmbeddedHomeserver(tmp_path, port=free_port()).ensure_config()
    config = tmp_path / "synapse" / "homeserver.yaml"
    assert yaml.safe_load(config.read_text())["listeners"][0]["x_forwarded"] is False
    EmbeddedHomeserver(tmp_path, behind_proxy=True).ensure_config()
    assert yaml.safe_load(config.read_text())["listeners"][0]["x_forwarded"] is True
    EmbeddedHomeserver(tmp_path).ensure_config()
    assert yaml.safe_load(config.read_text())["listeners"][0]["x_forwarded"] is False


async def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        server = EmbeddedHomeserver(tmp_path, port=port)
        with pytest.raises(HomeserverError) as caught:
            await server.start()
    message = str(caught.value)
    assert "\n" not in message
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "--port" in message
    assert not server.running


async def test_garbage_config_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "synapse" / "homeserver.yaml"
    config.parent.mkdir()
    config.write_text("listeners: [\n  this is: {not yaml\n")
    server = EmbeddedHomeserver(tmp_path, port=free_port())
    with pytest.raises(HomeserverError) as caught:
        await server.start()
    message = str(caught.value)
    assert str(config) in message
    assert "not valid YAML" in message
    assert "move" in message
    assert not server.running


async def test_database_that_is_not_sqlite_names_the_file(tmp_path: Path) -> None:
    server = EmbeddedHomeserver(tmp_path, port=free_port())
    server.ensure_config()
    database = tmp_path / "synapse" / "homeserver.db"
    database.write_bytes(b"this was never a database" * 100)
    with pytest.raises(HomeserverError) as caught:
        await server.start()
    assert str(database) in str(caught.value)
    assert "not an SQLite database" in str(caught.value)


async def test_explicit_port_is_saved(tmp_path: Path) -> None:
    first = EmbeddedHomeserver(tmp_path, port=free_port()).ensure_config()
    new_port = free_port()
    moved = EmbeddedHomeserver(tmp_path, port=new_port).ensure_config()
    assert moved.base_url == f"http://127.0.0.1:{new_port}"
    assert moved.server_name == first.server_name
    again = EmbeddedHomeserver(tmp_path).ensure_config()
    assert again == moved


async def test_one_user_can_create_many_rooms(
    homeserver: EmbeddedHomeserver, user_factory: MakeUser
) -> None:
    user_id, password = await user_factory("rooms")
    base = homeserver.info.base_url
    status, body = await _login(base, user_id, password)
    assert status == 200, body
    token = body["access_token"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(25):
            async with http.post(
                f"{base}/_matrix/client/v3/createRoom", json={"preset": "private_chat"}
            ) as resp:
                answer = await resp.json()
                assert resp.status == 200, f"room {i + 1}: {resp.status} {answer}"
                assert answer["room_id"].startswith("!")


async def test_missing_synapse_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_synapse(name: str, package: str | None = None) -> Any:
        return None if name == "synapse" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_synapse)
    server = EmbeddedHomeserver(tmp_path, port=free_port())
    with pytest.raises(HomeserverError, match=r"pip install 'e2ecounsel\[local\]'"):
        await server.start()
    assert not server.running


async def test_a_saved_admin_token_of_an_older_version_is_signed_out(
    homeserver: EmbeddedHomeserver,
) -> None:
    base = homeserver.info.base_url
    path = homeserver.info.data_dir / "admin.json"
    await homeserver.registration_tokens()
    saved = json.loads(path.read_text())
    status, body = await _login(base, saved["user_id"], saved["password"])
    assert status == 200, body
    old = body["access_token"]
    path.write_text(json.dumps({**saved, "access_token": old}))

    await homeserver.registration_tokens()
    assert set(json.loads(path.read_text())) == {"user_id", "password"}
    status, _ = await _call("GET", f"{base}/_matrix/client/v3/account/whoami", token=old)
    assert status == 401


async def test_profile_look_up_says_only_what_the_server_says(
    homeserver: EmbeddedHomeserver, user_factory: MakeUser
) -> None:
    base = homeserver.info.base_url
    user_id, password = await user_factory("profile")
    status, body = await _login(base, user_id, password)
    assert status == 200, body
    token = body["access_token"]
    assert await lookup_profile(base, user_id, token=token) is True
    # This server wants a sign-in and a shared room for profiles: it cannot tell a stranger
    # from a missing account, so the answer is "unknown", never "exists".
    assert await lookup_profile(base, "@nobody-at-all:localhost", token=token) is None
    assert await lookup_profile(base, user_id) is None
