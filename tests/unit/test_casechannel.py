"""The machine-readable case channel: what the bot writes the app reads; the rest is ignored."""

from __future__ import annotations

import pytest

from e2ecounsel import casechannel
from e2ecounsel.casechannel import FIELD, CaseEvent, attach, parse


def test_round_trip() -> None:
    event = CaseEvent("brief", 7, "!room:hs", {"risk": "high", "shared": True})
    content = attach({"msgtype": "m.text", "body": "New client"}, event)
    assert content["body"] == "New client"
    assert parse(content) == event


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "brief",
        {"v": 2, "kind": "brief"},
        {"v": 1, "kind": "nonsense"},
        {"v": 1, "kind": "brief", "engagement": "7"},
        {"v": 1, "kind": "brief", "engagement": True},
        {"v": 1, "kind": "brief", "room": "#alias:hs"},
        {"v": 1, "kind": "brief", "data": ["x"]},
    ],
)
def test_malformed_is_ignored(raw: object) -> None:
    assert parse({"body": "x", FIELD: raw}) is None


def test_vocabulary_is_shared() -> None:
    assert casechannel.RISKS[0] == "high"
    assert set(casechannel.OUTCOMES) == {"resolved", "face_to_face", "continue", "refer"}
