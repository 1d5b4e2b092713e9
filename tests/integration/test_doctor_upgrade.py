"""doctor on a data dir written by an older version: each weaker default is named with its fix."""

from __future__ import annotations

import re
from pathlib import Path

from e2ecounsel.doctor import _check_admin_listener, _check_registration_config
from e2ecounsel.homeserver import EmbeddedHomeserver, free_port


def _as_older_version_wrote_it(root: Path) -> None:
    """One listener serving the admin API, no password policy, no log filter."""
    config = root / "synapse" / "homeserver.yaml"
    text = config.read_text()
    text = re.sub(r"(?ms)^    # Synapse serves its admin API.*?(?=^database:)", "\n", text)
    text = re.sub(r"(?ms)^password_config:.*?require_uppercase: false\n", "", text)
    config.write_text(text)
    log_config = root / "synapse" / "log.config"
    log_config.write_text(
        re.sub(
            r"(?ms)^filters:.*?RedactRegistrationTokens\n|^    filters: \[redact\]\n",
            "",
            log_config.read_text(),
        )
    )


async def test_older_layout_is_named_with_its_fix(tmp_path: Path) -> None:
    EmbeddedHomeserver(tmp_path, port=free_port(), bcrypt_rounds=4).ensure_config()
    _as_older_version_wrote_it(tmp_path)
    async with EmbeddedHomeserver(tmp_path) as hs:
        assert hs.info.admin_url == hs.info.base_url  # one listener, as before
        admin = await _check_admin_listener(hs)
        assert [f.level for f in admin] == ["fail"]
        assert "served on the client listener" in admin[0].detail
        assert "move" in admin[0].fix and "e2ecounsel up" in admin[0].fix
        # Our own tools still work on the old layout.
        assert await hs.registration_tokens() == []

    found = {f.check: f for f in _check_registration_config(hs)}
    assert found["registration"].level == "ok"
    assert found["password policy"].level == "fail"
    assert "minimum_length: 10" in found["password policy"].fix
    assert found["homeserver log"].level == "fail"


async def test_current_layout_passes(tmp_path: Path) -> None:
    async with EmbeddedHomeserver(tmp_path, port=free_port(), bcrypt_rounds=4) as hs:
        assert [f.level for f in await _check_admin_listener(hs)] == ["ok"]
    found = {f.check: f.level for f in _check_registration_config(hs)}
    assert found == {"registration": "ok", "password policy": "ok"}
