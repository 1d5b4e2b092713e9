"""Turning domain replies into the words a person reads, in their language.

The domain speaks in message keys and raw ids; everything a client or
counselor sees comes from ``policies/<lang>/messages.toml``. This module fills
in what only the bridge knows: the consent text, the crisis line for the
client's country, instrument titles, questions and scales, numbered lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from e2ecounsel.domain.replies import Reply
from e2ecounsel.policy import Policy


class Renderer:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def text(self, lang: str, key: str, **params: Any) -> str:
        return self.policy.text(lang, key, **params)

    def numbered(self, lang: str, labels: Iterable[str]) -> str:
        return "\n".join(
            self.policy.text(lang, "list.option", index=i, label=label)
            for i, label in enumerate(labels, start=1)
        )

    def country_labels(self, lang: str, codes: Sequence[str]) -> list[str]:
        return [self.policy.crisis.country(c).label.get(lang, c) for c in codes]

    def topic_labels(self, lang: str, ids: Sequence[str]) -> list[str]:
        out = []
        for tid in ids:
            topic = self.policy.service.topic(tid)
            out.append(topic.label.get(lang, tid) if topic else tid)
        return out

    def specialty_labels(self, lang: str, ids: Sequence[str]) -> str:
        out = []
        for sid in ids:
            spec = self.policy.service.specialty(sid)
            out.append(spec.label.get(lang, sid) if spec else sid)
        return ", ".join(out)

    def profiles(self, lang: str, counselors: Sequence[Any]) -> str:
        return "\n".join(
            self.policy.text(
                lang,
                "profile.line",
                index=i,
                name=c.name,
                credentials=c.credentials,
                languages=", ".join(c.languages),
                specialties=self.specialty_labels(lang, c.specialties),
            )
            for i, c in enumerate(counselors, start=1)
        )

    def reply(
        self,
        lang: str,
        reply: Reply,
        *,
        country: str | None = None,
        counselors: Mapping[str, Any] | None = None,
    ) -> str:
        """Render one intake reply, adding the parameters the domain leaves to us."""
        params: dict[str, Any] = dict(reply.params)
        key = reply.key
        policy = self.policy
        instrument = policy.instruments.get(str(params.get("instrument", "")))
        if "consent" in key or key == "intake.reconsent":
            params["consent_text"] = policy.consent[lang].text
        params.setdefault("crisis_line", policy.crisis_line(lang, country))
        if instrument is not None:
            params["instrument_title"] = instrument.title.get(lang, instrument.id)
            params["scale"] = instrument.scale_text(lang)
            if "item" in params:
                params["question"] = instrument.items[int(params["item"])].text[lang]
            if key == "intake.screening_result":
                band = instrument.band(str(params.get("severity", "")))
                params["severity"] = band.label.get(lang, band.severity) if band else ""
        if key == "intake.welcome" or key == "intake.language_invalid":
            params["languages"] = ", ".join(map(str, params.get("languages", ())))
        options = params.get("options")
        if isinstance(options, list | tuple):
            ids = [str(o) for o in options]
            if key == "intake.country":
                params["options"] = self.numbered(lang, self.country_labels(lang, ids))
            elif key == "intake.zone":
                place = policy.crisis.country(country)
                params["options"] = self.numbered(lang, [place.zone_label(lang, z) for z in ids])
            elif key == "intake.topic":
                params["options"] = self.numbered(lang, self.topic_labels(lang, ids))
            elif key == "intake.counselor":
                known = counselors or {}
                params["options"] = self.profiles(lang, [known[i] for i in ids])
            else:
                params["options"] = self.numbered(lang, ids)
        return policy.text(lang, key, **params)
