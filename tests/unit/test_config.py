"""The bridge configuration file: loading, the operator's error messages, writing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from e2ecounsel.config import (
    EXAMPLE_CONFIG,
    PASSWORD_ENV,
    BridgeConfig,
    load_config,
    write_config,
)
from e2ecounsel.errors import ConfigError

VALID = """\
[homeserver]
url = "https://matrix.counsel.test/"

[bot]
user_id = "@counsel:counsel.test"
password = "s3cret-bot-pass"
device_name = "counsel bot"

[paths]
data_dir = "state"

[bridge]
supervisors_room = "!sUpErViSoRs:counsel.test"
allowed_servers = ["partner.test", "10.0.0.5:8448"]

[logging]
level = "debug"
"""


def write(tmp_path: Path, text: str, name: str = "bridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def error_of(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config(path, env={} if env is None else env)
    return err.value


def test_valid_file_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID), env={})
    assert cfg == BridgeConfig(
        homeserver_url="https://matrix.counsel.test",
        bot_user_id="@counsel:counsel.test",
        bot_password="s3cret-bot-pass",
        data_dir=tmp_path / "state",
        policies_dir=None,
        supervisors_room="!sUpErViSoRs:counsel.test",
        allowed_servers=("partner.test", "10.0.0.5:8448"),
        device_name="counsel bot",
        log_level="DEBUG",
    )
    assert "s3cret" not in repr(cfg)  # a logged config does not leak the password


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    text = '[homeserver]\nurl = "http://127.0.0.1:8008"\n[bot]\nuser_id = "@counsel:localhost"\n'
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.bot_password is None
    assert cfg.device_name == "e2ecounsel bridge"
    assert cfg.log_level == "INFO"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.policies_dir is None and cfg.supervisors_room is None
    assert cfg.allowed_servers == ()


def test_relative_paths_follow_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    (conf_dir / "my-policies").mkdir(parents=True)
    text = VALID.replace(
        'data_dir = "state"', 'data_dir = "../var/e2e"\npolicies_dir = "my-policies"'
    )
    path = write(conf_dir, text)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc/bridge.toml"), env={})
    assert cfg.data_dir == tmp_path / "var" / "e2e"
    assert cfg.policies_dir == conf_dir / "my-policies"
    assert load_config(path, env={}) == cfg


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    err = error_of(path)
    assert str(err).startswith(f"{path}: no such file")
    assert "e2ecounsel up" in str(err)
    assert "example" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            'user_id = "@counsel:counsel.test"',
            'user_id = "counsel"',
            "bot.user_id",
            "expected @localpart:server, got 'counsel'",
        ),
        (
            'user_id = "@counsel:counsel.test"',
            'user_id = "@Counsel Bot:counsel.test"',
            "bot.user_id",
            "expected @localpart:server, got '@Counsel Bot:counsel.test'",
        ),
        (
            'url = "https://matrix.counsel.test/"',
            'url = "matrix.counsel.test"',
            "homeserver.url",
            "expected an http:// or https:// URL, got 'matrix.counsel.test'",
        ),
        (
            'url = "https://matrix.counsel.test/"',
            'url = "ftp://matrix.counsel.test"',
            "homeserver.url",
            "expected an http:// or https:// URL, got 'ftp://matrix.counsel.test'",
        ),
        (
            'url = "https://matrix.counsel.test/"',
            "url = 8008",
            "homeserver.url",
            "expected a string, got an integer",
        ),
        (
            'url = "https://matrix.counsel.test/"',
            "",
            "homeserver.url",
            "missing; add it under [homeserver]",
        ),
        (
            'supervisors_room = "!sUpErViSoRs:counsel.test"',
            'supervisors_room = "#supervisors:counsel.test"',
            "bridge.supervisors_room",
            "expected a room ID like '!abc123:server' (Room settings > Advanced), "
            "got '#supervisors:counsel.test'",
        ),
        (
            'allowed_servers = ["partner.test", "10.0.0.5:8448"]',
            'allowed_servers = ["partner.test", "https://other.test"]',
            "bridge.allowed_servers",
            "item 2: expected a server name like 'matrix.org', got 'https://other.test'",
        ),
        (
            'allowed_servers = ["partner.test", "10.0.0.5:8448"]',
            'allowed_servers = "partner.test"',
            "bridge.allowed_servers",
            "expected an array of strings, got a string",
        ),
        (
            'level = "debug"',
            'level = "verbose"',
            "logging.level",
            "unknown level; use DEBUG, INFO, WARNING, ERROR",
        ),
        (
            'level = "debug"',
            'level = "warn"',
            "logging.level",
            "unknown level; did you mean 'WARNING'?",
        ),
        (
            'data_dir = "state"',
            'data_dir = "state"\npolicies_dir = "nowhere"',
            "paths.policies_dir",
            "not found; fix the path, or delete the line to use the packaged policies",
        ),
        (
            'device_name = "counsel bot"',
            'device_name = "two\\nlines"',
            "bot.device_name",
            "expected one line of at most 100 characters",
        ),
        (
            'password = "s3cret-bot-pass"',
            'password = ""',
            "bot.password",
            f"empty; delete the line, or set {PASSWORD_ENV} instead",
        ),
    ],
)
def test_each_error_names_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new))
    err = error_of(path)
    assert err.file == str(path)
    assert err.key == key
    assert str(err).startswith(f"{path}: {key}: ")
    assert str(err).endswith(message)


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'homeserver = "https://matrix.counsel.test"\n')
    assert str(error_of(path)) == (
        f"{path}: homeserver: expected a table [homeserver], got a string"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("url =", "ulr =", "homeserver.ulr: unknown key; did you mean 'url'?"),
        ("[logging]", "[loging]", "loging: unknown key; did you mean 'logging'?"),
        ("user_id =", "userid =", "bot.userid: unknown key; did you mean 'user_id'?"),
        (
            "allowed_servers =",
            "allowed_server =",
            "bridge.allowed_server: unknown key; did you mean 'allowed_servers'?",
        ),
        (
            "[logging]",
            '[logging]\nformat = "json"',
            "logging.format: unknown key; valid keys: 'level'",
        ),
        (
            'device_name = "counsel bot"',
            'device_name = "counsel bot"\n[bot.extra]\nx = 1',
            "bot.extra: unknown key; valid keys: 'user_id', 'password', 'device_name'",
        ),
        (
            "[logging]",
            '[logging]\ndata_dir = "x"',
            "logging.data_dir: unknown key here; it belongs under [paths]",
        ),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = write(tmp_path, VALID.replace(old, new, 1))
    assert str(error_of(path)) == f"{path}: {expected}"


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    lines = VALID.splitlines()
    assert lines[3] == "[bot]"
    lines[3] = "[bot"
    path = write(tmp_path, "\n".join(lines))
    err = error_of(path)
    assert str(err).startswith(f"{path}: line 4, column ")
    assert "invalid TOML" in str(err)
    assert "(at line" not in str(err)  # not repeated in tomllib's own wording


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_bytes(b'[bot]\nuser_id = "@caf\xe9:x.test"\n')
    assert str(error_of(path)) == f"{path}: not UTF-8 text; save the file as UTF-8"


def sample_values_replaced() -> str:
    return (
        EXAMPLE_CONFIG.replace("https://matrix.example.com", "https://matrix.counsel.test")
        .replace("@bot:example.com", "@counsel:counsel.test")
        .replace('"CHANGE_ME"', '"real-password"')
    )


def test_example_config_loads_once_its_sample_values_are_changed(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, sample_values_replaced()), env={})
    assert cfg.bot_user_id == "@counsel:counsel.test"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.log_level == "INFO"


def test_example_config_as_copied_is_refused(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, EXAMPLE_CONFIG))
    assert err.key == "homeserver.url"
    assert "sample value" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("https://matrix.counsel.test", "https://matrix.example.com", "homeserver.url"),
        ("@counsel:counsel.test", "@bot:example.com", "bot.user_id"),
        ("real-password", "CHANGE_ME", "bot.password"),
        ("real-password", "changeme", "bot.password"),
        ("real-password", "ChangeMe", "bot.password"),
        (
            '# supervisors_room = "!abcdefghijklmnop:example.com"',
            'supervisors_room = "!abcdefghijklmnop:example.com"',
            "bridge.supervisors_room",
        ),
    ],
)
def test_sample_values_are_refused(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = sample_values_replaced()
    assert old in text
    err = error_of(write(tmp_path, text.replace(old, new)))
    assert err.key == key
    assert "sample value" in str(err)
    assert "set" in str(err)  # says what to do


def test_env_password_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert load_config(path, env={PASSWORD_ENV: "from-env"}).bot_password == "from-env"
    assert load_config(path, env={PASSWORD_ENV: ""}).bot_password == "s3cret-bot-pass"
    no_password = write(tmp_path, VALID.replace('password = "s3cret-bot-pass"\n', ""), "b.toml")
    assert load_config(no_password, env={}).bot_password is None
    assert load_config(no_password, env={PASSWORD_ENV: "from-env"}).bot_password == "from-env"


def test_env_password_sample_value_is_refused(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, VALID), env={PASSWORD_ENV: "CHANGE_ME"})
    assert err.key == PASSWORD_ENV
    assert "CHANGE_ME" not in str(err)


def test_password_is_never_echoed_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('password = "s3cret-bot-pass"', "password = 12345678"))
    err = error_of(path)
    assert err.key == "bot.password"
    assert "12345678" not in str(err)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    policies = tmp_path / "elsewhere" / "policies"
    policies.mkdir(parents=True)
    conf_dir = tmp_path / "conf"
    cfg = BridgeConfig(
        homeserver_url="http://127.0.0.1:8008",
        bot_user_id="@counsel:localhost",
        bot_password='p"a\\ss\nw\x7ford ☕ 𝄞',
        data_dir=conf_dir / "data",
        policies_dir=policies,
        supervisors_room="!AbCdEf0123456789_-abcdefghijklmnopqrstuvwxyz",
        allowed_servers=("partner.test", "*"),
        device_name='bridge on host "x"',
        log_level="WARNING",
    )
    path = conf_dir / "bridge.toml"
    write_config(path, cfg)
    assert load_config(path, env={}) == cfg
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    assert 'data_dir = "data"' in text  # inside the config folder: written relative


def test_write_config_replaces_a_readable_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    cfg = load_config(write(tmp_path, VALID, "src.toml"), env={})
    write_config(path, cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path, env={}) == cfg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridge.toml", "src.toml"]


def test_write_config_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID, "src.toml"), env={})
    bad = BridgeConfig(**{**cfg.__dict__, "bot_user_id": "counsel"})
    path = tmp_path / "bridge.toml"
    with pytest.raises(ConfigError, match="bot.user_id: expected @localpart:server"):
        write_config(path, bad)
    assert not path.exists()


def test_who_may_start_an_intake(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID), env={})
    assert cfg.bot_server == "counsel.test"
    assert cfg.may_start_intake("@client:counsel.test")  # the bot's own server, always
    assert cfg.may_start_intake("@client:partner.test")
    assert cfg.may_start_intake("@client:10.0.0.5:8448")
    assert not cfg.may_start_intake("@client:elsewhere.test")
    assert not cfg.may_start_intake("not-a-user-id")

    only_own = load_config(
        write(tmp_path, VALID.replace('["partner.test", "10.0.0.5:8448"]', "[]"), "own.toml"),
        env={},
    )
    assert only_own.may_start_intake("@client:counsel.test")
    assert not only_own.may_start_intake("@client:partner.test")

    everyone = load_config(
        write(tmp_path, VALID.replace('["partner.test", "10.0.0.5:8448"]', '["*"]'), "all.toml"),
        env={},
    )
    assert everyone.may_start_intake("@client:anywhere.test")


def test_readable_file_with_password_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, VALID)
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="e2ecounsel.config"):
        load_config(path, env={})
    assert f"chmod 600 {path}" in caplog.text
    assert "s3cret" not in caplog.text


def test_database_defaults_to_the_data_dirs_sqlite_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID), env={})
    assert cfg.database is None
    assert cfg.database_target == tmp_path / "state" / "bridge.db"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "postgresql://e2e@db.counsel.test/e2ecounsel",
            "postgresql://e2e@db.counsel.test/e2ecounsel",
        ),
        (
            "postgres://e2e@/e2ecounsel?host=/run/postgresql",
            "postgres://e2e@/e2ecounsel?host=/run/postgresql",
        ),
        ("store/bridge.sqlite", "PATH"),
    ],
)
def test_database_setting_is_a_postgres_url_or_a_path(
    tmp_path: Path, setting: str, expected: str
) -> None:
    text = VALID.replace('data_dir = "state"', f'data_dir = "state"\ndatabase = "{setting}"')
    cfg = load_config(write(tmp_path, text), env={})
    want = tmp_path / "store" / "bridge.sqlite" if expected == "PATH" else expected
    assert cfg.database == want
    assert cfg.database_target == want
    path = tmp_path / "again.toml"
    write_config(path, cfg)
    assert load_config(path, env={}).database_target == want


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("mysql://e2e@db/e2ecounsel", "unknown database type 'mysql'"),
        ("postgresql://e2e@db.counsel.test", "name the database"),
    ],
)
def test_bad_database_setting_is_named(tmp_path: Path, setting: str, message: str) -> None:
    text = VALID.replace('data_dir = "state"', f'data_dir = "state"\ndatabase = "{setting}"')
    err = error_of(write(tmp_path, text))
    assert err.key == "paths.database"
    assert message in str(err)


def test_database_password_in_the_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "postgresql://e2e:hunter2@db.counsel.test/e2ecounsel"
    text = VALID.replace('data_dir = "state"', f'data_dir = "state"\ndatabase = "{url}"')
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.database == url
    assert "~/.pgpass" in caplog.text
    assert "hunter2" not in caplog.text
