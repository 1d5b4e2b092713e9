"""The TUI's settings: typed, validated once at start, passed in (never global)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from e2ecounsel.errors import ConfigError
from tui.notes import MODERATE, KdfLimits
from tui.queue import parse_windows

DEFAULT_WINDOWS = ("09:00", "13:00", "19:00")


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "e2ecounsel"


def default_tui_data_dir() -> Path:
    env = os.environ.get("E2ECOUNSEL_TUI_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "e2ecounsel-tui"


@dataclass(frozen=True)
class TuiSettings:
    """Where the app keeps its store, whom it talks to, and the counselor's rhythm.

    ``bot_user_id`` is the service's bot: only its case-channel messages count
    as briefs, and only its invitations are accepted automatically. When not
    given it is ``@counsel:<server of user_id>`` (what ``e2ecounsel up`` makes).
    """

    data_dir: Path
    config_dir: Path
    homeserver: str = ""
    user_id: str = ""
    bot_user_id: str = ""
    reply_windows: tuple[time, ...] = field(default_factory=lambda: parse_windows(DEFAULT_WINDOWS))
    device_name: str = "e2ecounsel tui"
    kdf: KdfLimits = MODERATE
    #: The longest wait between tries when the homeserver does not answer (seconds).
    max_backoff_s: float = 30.0

    def bot_for(self, user_id: str) -> str:
        if self.bot_user_id:
            return self.bot_user_id
        server = user_id.split(":", 1)[1] if ":" in user_id else "localhost"
        return f"@counsel:{server}"

    @property
    def snippets_file(self) -> Path:
        return self.config_dir / "snippets.toml"

    def account_dir(self, user_id: str) -> Path:
        """One store per account, so two counselors on one machine never mix."""
        safe = user_id.lstrip("@").replace(":", "_").replace("/", "_")
        return self.data_dir / safe


def load_settings(
    config_dir: Path,
    *,
    data_dir: Path | None = None,
    homeserver: str | None = None,
    user_id: str | None = None,
) -> TuiSettings:
    """Settings from ``tui.toml`` in ``config_dir`` (optional), overridden by arguments.

    ``tui.toml`` may hold ``homeserver``, ``user_id``, ``bot_user_id`` and
    ``reply_windows`` (list of "HH:MM").
    """
    path = config_dir / "tui.toml"
    data: dict[str, object] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the settings: {exc}", file=path) from exc
    known = {"homeserver", "user_id", "bot_user_id", "reply_windows"}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown setting {key!r}; known: {', '.join(sorted(known))}", file=path, key=key
            )
    windows = data.get("reply_windows", list(DEFAULT_WINDOWS))
    try:
        if not isinstance(windows, list):
            raise TypeError("not a list")
        parsed = parse_windows([str(w) for w in windows])
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            'reply windows must be a list of "HH:MM" times', file=path, key="reply_windows"
        ) from exc
    for key in ("homeserver", "user_id", "bot_user_id"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError("must be a string", file=path, key=key)
    return TuiSettings(
        data_dir=data_dir or default_tui_data_dir(),
        config_dir=config_dir,
        homeserver=homeserver or str(data.get("homeserver", "")),
        user_id=user_id or str(data.get("user_id", "")),
        bot_user_id=str(data.get("bot_user_id", "")),
        reply_windows=parsed,
    )
