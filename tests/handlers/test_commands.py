"""The command registry and the commands, at the handler tier (no homeserver)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bridge.kernel.commands import (
    CLIENT,
    COUNSELOR,
    SUPERVISOR,
    CommandEvent,
    Commands,
    DuplicateRegistration,
    Registry,
)
from bridge.router import FEATURES
from e2ecounsel.policy import Policy
from tests.handlers.kit import Hub, seat, session_of

AUDIENCES = (CLIENT, COUNSELOR, SUPERVISOR)


def test_every_command_in_the_vocabulary_has_a_handler_and_every_handler_its_words(
    policy: Policy,
) -> None:
    registry = Registry(FEATURES)
    for lang in policy.languages:
        vocabulary = policy.vocabulary(lang)
        for audience in AUDIENCES:
            assert set(vocabulary.commands(audience)) == registry.ids(audience), (lang, audience)


def test_a_command_registered_twice_is_refused() -> None:
    async def handler(ev: CommandEvent) -> None:
        return None

    one, two = Commands(), Commands()
    one.command(CLIENT, "status")(handler)
    two.command(CLIENT, "status")(handler)
    with pytest.raises(DuplicateRegistration):
        Registry([one, two])


async def test_help_lists_the_commands_of_the_language_from_the_vocabulary(
    hub: Hub, policy: Policy
) -> None:
    await hub.counselor("@ana:test", "Ana")
    dm = await seat(hub, "@rain:test")
    await hub.event(dm, "@rain:test", "help")
    shown = hub.last(dm)
    vocabulary = policy.vocabulary("en")
    for command_id in vocabulary.commands(CLIENT):
        line = policy.text(
            "en",
            "help.line",
            command=f"{vocabulary.words(command_id)[0]} {vocabulary.args(command_id)}".rstrip(),
            help=vocabulary.help(command_id),
        )
        assert line in shown
    # The Indonesian word for help answers in the client's language.
    indonesian = policy.vocabulary("id")
    await hub.event(dm, "@rain:test", indonesian.words("help")[-1])
    assert hub.last(dm) == shown


async def test_a_counselor_command_by_case_number_changes_the_case_and_answers_privately(
    hub: Hub,
) -> None:
    ana = await hub.counselor("@ana:test", "Ana")
    dm = await seat(hub, "@rain:test")
    case, room = await session_of(hub, "@rain:test")
    channel = (await hub.store.get_counselor(ana.user_id)).case_room_id  # type: ignore[union-attr]
    assert channel is not None
    hub.join(channel, ana.user_id)
    to_client = len(hub.said(room)) + len(hub.said(dm))

    await hub.event(channel, ana.user_id, f"!risk {case} high")
    assert (await hub.store.get_engagement(case)).risk == "high"  # type: ignore[union-attr]
    assert [f.kind for f in hub.facts(channel)][-1] == "risk"
    await hub.event(channel, ana.user_id, "!risk 999 high")
    assert hub.facts(channel)[-1].data == {"command": "risk", "ok": False}
    assert len(hub.said(room)) + len(hub.said(dm)) == to_client  # the client heard nothing


async def test_a_command_typed_in_the_session_room_is_redacted_there_and_answered_in_the_channel(
    hub: Hub,
) -> None:
    ana = await hub.counselor("@ana:test", "Ana")
    await seat(hub, "@rain:test")
    case, room = await session_of(hub, "@rain:test")
    channel = (await hub.store.get_counselor(ana.user_id)).case_room_id  # type: ignore[union-attr]
    assert channel is not None
    hub.join(channel, ana.user_id)
    in_room = len(hub.said(room))

    event_id = await hub.event(room, ana.user_id, "!risk medium")
    assert (await hub.store.get_engagement(case)).risk == "medium"  # type: ignore[union-attr]
    assert any(quote(event_id) in path for _, path, _ in hub.matrix.calls("/redact/"))
    assert len(hub.said(room)) == in_room
    assert hub.facts(channel)[-1].kind == "risk"

    # The client typing a counselor command changes nothing and is told so, in their room.
    await hub.event(room, "@rain:test", "!close resolved")
    assert (await hub.store.get_engagement(case)).status == "active"  # type: ignore[union-attr]
    assert hub.last(room) == hub.policy.text("en", "not_allowed")


async def test_a_pending_question_goes_to_the_feature_that_asked_it(hub: Hub) -> None:
    await hub.counselor("@ana:test", "Ana")
    dm = await seat(hub, "@rain:test")
    await hub.event(dm, "@rain:test", "erase")
    assert hub.last(dm) == hub.policy.text("en", "erase.confirm")
    await hub.event(dm, "@rain:test", "tidak")  # "no" in the other language counts too
    assert hub.last(dm) == hub.policy.text("en", "erase.cancelled")
    assert await hub.store.get_client("@rain:test") is not None
    await hub.event(dm, "@rain:test", "erase")
    await hub.event(dm, "@rain:test", "yes")
    assert await hub.store.get_client("@rain:test") is None
