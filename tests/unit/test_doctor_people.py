"""doctor reads the roster, supervisors and their room through the store port, on both back-ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.persistence.pages import Pages
from bridge.persistence.store import BridgeStore, Counselor
from e2ecounsel.config import BridgeConfig, write_config
from e2ecounsel.doctor import People, diagnose, read_people
from e2ecounsel.sealing import Sealer
from tests.pgkit import Target

KEY = bytes(range(32))
ROOM = "!supervisors:counsel.test"


def counselor(user_id: str, *, on_call: bool = False, active: bool = True) -> Counselor:
    return Counselor(
        user_id=user_id,
        name="Dewi",
        credentials="M.Psi.",
        languages=("id",),
        specialties=("anxiety",),
        capacity=3,
        timezone="Asia/Jakarta",
        reply_windows=("09:00",),
        on_call=on_call,
        active=active,
    )


def config(root: Path, database: Target) -> BridgeConfig:
    return BridgeConfig(
        homeserver_url="https://matrix.counsel.test",
        bot_user_id="@counsel:counsel.test",
        bot_password=None,
        data_dir=root,
        policies_dir=None,
        supervisors_room=None,
        allowed_servers=(),
        device_name="e2ecounsel bridge",
        log_level="INFO",
        database=database,
    )


def by_check(findings: list[object]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in findings:
        found.setdefault(f.check, []).append(f"{f.level} {f.detail}")  # type: ignore[attr-defined]
    return found


@pytest.fixture(autouse=True)
def _key_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("E2ECOUNSEL_SEALING_KEY", KEY.hex())


async def test_people_and_their_checks(database_target: Target, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    write_config(root / "bridge.toml", config(root, database_target))
    store = await BridgeStore.open(database_target, Sealer(KEY))
    try:
        assert await read_people(config(root, database_target)) == People()
        found = by_check(await diagnose(root))
        assert found["supervisors"] == [
            "fail none on the list: crisis pages and SLA escalations reach no supervisor"
        ]
        assert "supervisors' room" not in found

        await store.add_counselor(counselor("@dewi:counsel.test", on_call=True))
        await store.add_counselor(counselor("@adi:counsel.test"))
        await store.add_counselor(counselor("@gone:counsel.test", on_call=True))
        await store.deactivate_counselor("@gone:counsel.test")
        await Pages(store.db).add_supervisor("@sari:counsel.test", "Sari")
        people = await read_people(config(root, database_target))
        assert people == People(
            counselors=["@adi:counsel.test", "@dewi:counsel.test"],
            on_call=["@dewi:counsel.test"],
            supervisors=["@sari:counsel.test"],
        )
        found = by_check(await diagnose(root))
        assert found["supervisors"] == ["ok 1 on the list"]
        assert found["supervisors' room"] == ["fail not created yet: pages have nowhere to go"]

        await store.set_room(ROOM, "supervisors", None)
        assert (await read_people(config(root, database_target))).supervisors_room == ROOM
        found = by_check(await diagnose(root))
        assert found["supervisors' room"] == [f"ok {ROOM}"]
    finally:
        await store.close()


async def test_an_unreadable_database_is_named(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    broken = tmp_path / "not-a-db"
    broken.write_text("hello, this is no database\n")
    write_config(root / "bridge.toml", config(root, broken))
    found = by_check(await diagnose(root))
    assert found["bridge database"][0].startswith(f"fail cannot read {broken}: ")
    assert "supervisors" not in found
