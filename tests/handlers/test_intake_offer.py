"""The counselors offered at the end of the intake: read from the roster when the
intake reaches the choice, however it gets there."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from e2ecounsel.policy import Policy
from tests.handlers.kit import open_hub


async def test_without_topics_the_last_screening_answer_offers_the_free_counselors(
    tmp_path: Path, policy: Policy
) -> None:
    # No topics: the screening's last answer leads straight to the counselor choice.
    no_topics = replace(policy, service=replace(policy.service, topics=()))
    hub = await open_hub(tmp_path / "bridge.db", no_topics)
    try:
        await hub.counselor("@c1:test", "Dewi Lestari")
        client = "@client:test"
        dm = await hub.open_dm(client)
        answers = ["1", "agree", "yes"]
        if len(policy.crisis.countries[0].zones) > 1:
            answers.append("1")
        answers += ["1", "Rain", "skip", "skip"]
        for answer in answers:
            await hub.event(dm, client, answer)
        assert "Dewi Lestari" in hub.last(dm)
        await hub.event(dm, client, "1")  # the first one offered
        eng = await hub.store.current_engagement(client)
        assert eng is not None and eng.counselor_id == "@c1:test"
    finally:
        await hub.store.close()
