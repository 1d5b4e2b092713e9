"""docs/production.md: Synapse's own config parser reads its homeserver.yaml excerpt as it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from synapse.config.homeserver import HomeServerConfig

from e2ecounsel.homeserver import MIN_PASSWORD_LENGTH, EmbeddedHomeserver

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "docs" / "production.md"


def excerpt() -> dict[str, Any]:
    match = re.search(r"```yaml\n(.*?)```", RECIPE.read_text(encoding="utf-8"), re.DOTALL)
    assert match, "no homeserver.yaml excerpt in docs/production.md"
    loaded: dict[str, Any] = yaml.safe_load(match.group(1))
    return loaded


def parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **override: Any) -> HomeServerConfig:
    """A complete homeserver.yaml (the embedded one's other keys) with the excerpt on top."""
    hs = EmbeddedHomeserver(tmp_path / "data")
    hs.ensure_config()
    base = yaml.safe_load(hs.config_path.read_text(encoding="utf-8"))
    base.pop("federation_domain_whitelist", None)  # the embedded server does not federate
    monkeypatch.chdir(hs.config_path.parent)  # its secrets are named relative to it
    config = HomeServerConfig()
    folder = str(hs.config_path.parent)
    config.parse_config_dict({**base, **excerpt(), **override}, folder, folder)
    return config


def test_excerpt_is_synapse_on_postgresql_behind_a_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse(tmp_path, monkeypatch)
    (database,) = config.database.databases
    assert database.config["name"] == "psycopg2"
    assert database.config["args"]["dbname"] == "synapse"
    (listener,) = config.server.listeners
    assert listener.bind_addresses == ["127.0.0.1"]
    assert listener.http_options is not None and listener.http_options.x_forwarded is True
    assert [r.names for r in listener.http_options.resources] == [["client", "federation"]]
    assert config.server.public_baseurl == "https://matrix.example.org/"
    assert config.registration.registration_requires_token is True
    assert config.auth.password_policy == {"enabled": True, "minimum_length": MIN_PASSWORD_LENGTH}
    assert config.federation.is_domain_allowed_according_to_federation_whitelist("other.org")


def test_federation_off_as_the_recipe_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "federation_domain_whitelist: []" in RECIPE.read_text(encoding="utf-8")
    config = parse(tmp_path, monkeypatch, federation_domain_whitelist=[])
    assert not config.federation.is_domain_allowed_according_to_federation_whitelist("other.org")


def test_links_lead_to_files() -> None:
    assert "[docs/production.md](docs/production.md)" in (ROOT / "README.md").read_text()
    text = RECIPE.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert (RECIPE.parent / target).is_file(), target
    for named in re.findall(r"`(tests/[^`]+\.py)`", text):
        assert (ROOT / named).is_file(), named
