"""The time zone a client is shown times in: the one chosen in the intake comes first."""

from __future__ import annotations

from bridge.kernel.timefmt import client_zone
from bridge.persistence.store import ClientRecord
from tests.integration.bridgekit import counselor_record

COUNSELOR = counselor_record("@ana:example.org", "Ana", timezone="Europe/Amsterdam")


def client(**profile: object) -> ClientRecord:
    return ClientRecord(
        user_id="@c:example.org",
        dm_room_id=None,
        language="id",
        consent_version=None,
        consented_at=None,
        intake=None,
        profile=dict(profile),
        pending=None,
        created_at="2026-12-01T00:00:00+00:00",
    )


def test_the_chosen_zone_wins_over_the_country() -> None:
    assert client_zone(client(country="ID", zone="Asia/Jayapura"), COUNSELOR).key == "Asia/Jayapura"


def test_without_a_choice_the_country_then_the_counselor() -> None:
    assert client_zone(client(country="ID"), COUNSELOR).key == "Asia/Jakarta"
    assert client_zone(client(country="XX"), COUNSELOR).key == "Europe/Amsterdam"
    assert client_zone(None, COUNSELOR).key == "Europe/Amsterdam"


def test_a_zone_this_system_does_not_know_falls_back_to_the_country() -> None:
    assert client_zone(client(country="ID", zone="Mars/Olympus"), COUNSELOR).key == "Asia/Jakarta"
