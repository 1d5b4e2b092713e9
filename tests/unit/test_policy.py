"""The policy folder: the packaged one loads clean, and every kind of operator mistake is
reported with the file, the key and a hint an operator can act on."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from e2ecounsel.domain import screening
from e2ecounsel.errors import PolicyError
from e2ecounsel.policy import (
    MESSAGE_PARAMS,
    PolicyInvalid,
    check_policy,
    load_policy,
    template_params,
)
from tests.policykit import copy_policies, edit, problems


@pytest.fixture(scope="module")
def policy():
    return load_policy()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A private copy of the packaged policies to break one thing at a time."""
    return copy_policies(tmp_path / "policies")


# ------------------------------------------------------------------ packaged policy


def test_packaged_policy_checks_clean_in_both_languages(policy) -> None:
    assert check_policy() == []
    assert policy.languages == ("en", "id")
    for lang in ("en", "id"):
        assert set(policy.messages[lang]) == set(MESSAGE_PARAMS)
        assert len(policy.consent[lang].text) > 2000
        assert re.fullmatch(r"[0-9a-f]{64}", policy.consent[lang].version)
        assert policy.crisis.reply[lang]
        assert policy.crisis.phrases[lang]
    assert list(policy.instruments) == ["phq9", "gad7"]


def test_consent_texts_quote_the_service_rules(policy) -> None:
    en, id_ = policy.consent["en"].text, policy.consent["id"].text
    assert "{" not in en and "{" not in id_
    assert "about three times a day" in en
    assert "sekitar tiga kali sehari" in id_
    assert "730 days" in en and "730 hari" in id_
    assert "not an emergency service" in en
    assert "bukan layanan gawat darurat" in id_


def test_text_renders_in_the_clients_language_with_common_params(policy) -> None:
    assert (
        policy.text("en", "intake.age") == "Are you 18 years old or older? Please reply yes or no."
    )
    assert policy.text("id", "intake.age").startswith("Apakah usia Anda 18 tahun")
    assert "Kuesioner 1 dari 2: PHQ-9" in policy.text(
        "id",
        "intake.screening_intro",
        instrument_title="PHQ-9",
        count=9,
        scale="0 = Tidak sama sekali",
        number=1,
        instruments=2,
    )
    # An unknown language falls back to the default one.
    assert policy.text("fr", "language.name") == "English"


def test_text_with_a_missing_param_is_an_error_in_tests_and_readable_in_prod(policy) -> None:
    with pytest.raises(PolicyError, match="intake.matched.*counselor_name"):
        policy.text("en", "intake.matched")
    lenient = replace(policy, strict=False)
    assert "{counselor_name}" in lenient.text("en", "intake.matched")
    assert lenient.text("en", "no.such.key") == "no.such.key"
    with pytest.raises(PolicyError, match="no.such.key"):
        policy.text("en", "no.such.key")


def test_crisis_resources_per_country_and_fallback(policy) -> None:
    indonesia = policy.crisis_reply("id", "ID")
    assert "119 ext. 8" in indonesia and "112" in indonesia
    assert "{resources}" not in indonesia
    assert "988" in policy.crisis_reply("en", "us")
    assert "116 123" in policy.crisis_line("en", "GB")
    assert "13 11 14" in policy.crisis_line("en", "AU")
    unknown = policy.crisis_line("en", "XX")
    assert "findahelpline.com" in unknown
    assert policy.crisis.countries[-1].code == "other"
    assert "kill myself" in policy.crisis.phrases["en"]
    assert set(policy.crisis.rules) == {"en", "id"}


# ----------------------------------------------------------------------- screening


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately_severe"),
        (19, "moderately_severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_bands_at_boundaries(policy, score: int, severity: str) -> None:
    assert screening.severity(score, policy.instruments["phq9"].spec().bands) == severity


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "severe"),
        (21, "severe"),
    ],
)
def test_gad7_bands_at_boundaries(policy, score: int, severity: str) -> None:
    assert screening.severity(score, policy.instruments["gad7"].spec().bands) == severity


def test_scoring_and_the_critical_item(policy) -> None:
    phq9, gad7 = policy.instruments["phq9"], policy.instruments["gad7"]
    assert phq9.max_score == 27 and gad7.max_score == 21
    spec = phq9.spec()
    assert (spec.item_count, spec.max_answer, spec.critical) == (9, 3, {8: 1})
    assert screening.score([1, 2, 0, 0, 1, 0, 2, 1, 0]) == 7
    assert screening.severity(28, spec.bands) is None
    assert phq9.critical_items == {8: 1}
    assert phq9.critical_hits([0] * 8 + [1]) == (8,)
    assert phq9.critical_hits([3] * 8 + [0]) == ()
    assert gad7.critical_items == {}
    band = phq9.band(screening.severity(16, spec.bands) or "")
    assert band is not None and band.label["id"] == "cukup berat"
    assert "Thoughts that you would be better off dead" in phq9.items[8].text["en"]
    assert phq9.scale_text("en").splitlines()[0] == "0 = Not at all"


# ------------------------------------------------------------------ operator mistakes


def test_unknown_key_is_rejected_with_the_nearest_valid_key(folder: Path) -> None:
    edit(folder / "service.toml", "sla_hours = 12", "sla_hour = 12")
    found = problems(folder)
    assert any(
        p.startswith("service.toml: sla.sla_hour (line ") and "did you mean 'sla_hours'" in p
        for p in found
    ), found


def test_unknown_message_key_suggests_the_catalog_key(folder: Path) -> None:
    edit(folder / "id" / "messages.toml", "\nwelcome = ", "\nwelcom = ")
    found = problems(folder)
    assert any(
        p.startswith("id/messages.toml: intake.welcom") and "did you mean 'intake.welcome'" in p
        for p in found
    ), found
    assert any(
        p.startswith("id/messages.toml: intake.welcome") and "is missing" in p for p in found
    ), found


def test_missing_message_in_one_language(folder: Path) -> None:
    edit(folder / "id" / "messages.toml", 'same = "Anda sudah menjadi konselor klien ini."\n', "")
    found = problems(folder)
    assert found == [
        "id/messages.toml: refer.same (line "
        + found[0].split("(line ")[1].split(")")[0]
        + "): is missing (every language needs every text)"
    ]


def test_params_must_match_across_languages(folder: Path) -> None:
    edit(
        folder / "id" / "messages.toml",
        'active = "Konselor Anda adalah {counselor_name} ({credentials})."',
        'active = "Konselor Anda adalah {counselor_name}."',
    )
    found = problems(folder)
    assert len(found) == 1
    assert found[0].startswith("id/messages.toml: status.active (line ")
    assert (
        "uses {counselor_name} but en/messages.toml uses {counselor_name}, {credentials}"
        in found[0]
    )


def test_unknown_param_and_state_text_params(folder: Path) -> None:
    edit(
        folder / "en" / "messages.toml",
        "with {counselor_name}. You'll get",
        "with {counsellor_name}. You'll get",
    )
    edit(
        folder / "en" / "messages.toml",
        'room_name = "Counseling session"',
        'room_name = "Session {pseudonym}"',
    )
    found = "\n".join(problems(folder))
    assert "en/messages.toml: intake.matched" in found
    assert "unknown parameter {counsellor_name} (did you mean 'counselor_name'?)" in found
    assert "session.room_name" in found and "room names are not encrypted" in found


def test_band_gap_and_overlap(folder: Path) -> None:
    edit(folder / "screening" / "phq9.toml", "lo = 10\nhi = 14", "lo = 11\nhi = 14")
    found = problems(folder)
    assert found == [
        "screening/phq9.toml: bands (line "
        + found[0].split("(line ")[1].split(")")[0]
        + "): no band covers scores 10..10"
    ]
    edit(folder / "screening" / "phq9.toml", "lo = 11\nhi = 14", "lo = 9\nhi = 14")
    assert any("bands overlap at score 9" in p for p in problems(folder))


def test_bands_must_reach_the_maximum_score(folder: Path) -> None:
    edit(folder / "screening" / "gad7.toml", "lo = 15\nhi = 21", "lo = 15\nhi = 20")
    assert any("must end at the maximum score 21" in p for p in problems(folder))


def test_escalation_must_come_after_the_sla(folder: Path) -> None:
    edit(folder / "service.toml", "escalate_hours = 24", "escalate_hours = 12")
    found = problems(folder)
    assert len(found) == 1
    assert found[0].startswith("service.toml: sla.escalate_hours (line ")
    assert "must be greater than sla_hours (12)" in found[0]


def test_numbers_out_of_range_and_wrong_types(folder: Path) -> None:
    edit(folder / "service.toml", "min_age = 18", "min_age = 12")
    edit(folder / "service.toml", "max_message_chars = 4000", 'max_message_chars = "4000"')
    found = "\n".join(problems(folder))
    lines = (folder / "service.toml").read_text().splitlines()
    line = lines.index("min_age = 12") + 1
    assert (
        f"service.toml: service.min_age (line {line}): must be between 13 and 99, not 12" in found
    )
    assert "limits.max_message_chars" in found and "must be a whole number, not text" in found


def test_bad_toml_names_the_file_and_line(folder: Path) -> None:
    edit(folder / "crisis.toml", "[phrases]\nen = [", "[phrases]\nen = = [")
    found = problems(folder)
    assert len(found) == 1
    assert found[0].startswith("crisis.toml: is not valid TOML:")
    assert "line" in found[0]


def test_all_problems_are_reported_at_once(folder: Path) -> None:
    edit(folder / "service.toml", "escalate_hours = 24", "escalate_hours = 1")
    (folder / "id" / "consent.md").unlink()
    edit(folder / "crisis.toml", '\ncode = "other"', '\ncode = "elsewhere"')
    with pytest.raises(PolicyInvalid) as info:
        load_policy(folder)
    message = str(info.value)
    assert message.startswith(f"the policy in {folder} has ")
    assert "service.toml: sla.escalate_hours" in message
    assert "id/consent.md: file is missing" in message
    assert "crisis.toml: countries" in message and "'other'" in message


def test_missing_language_text_in_instrument_and_crisis_reply(folder: Path) -> None:
    edit(folder / "screening" / "gad7.toml", 'id = "Sulit untuk rileks"\n', "")
    edit(folder / "crisis.toml", 'id = """\nTerima kasih', 'idx = """\nTerima kasih')
    found = "\n".join(problems(folder))
    assert "screening/gad7.toml: items[3].id" in found and "is missing" in found
    assert "crisis.toml: reply.idx" in found and "did you mean 'id'" in found
    assert "crisis.toml: reply.id" in found


def test_permissive_trust_mode_is_a_warning(folder: Path) -> None:
    edit(folder / "service.toml", 'mode = "cross-signed-only"', 'mode = "permissive"')
    warnings = check_policy(folder)
    assert len(warnings) == 1
    assert warnings[0].startswith("service.toml: trust.mode: 'permissive'")
    assert load_policy(folder).service.trust_mode == "permissive"


def test_trust_mode_typo_is_an_error_with_suggestion(folder: Path) -> None:
    edit(folder / "service.toml", 'mode = "cross-signed-only"', 'mode = "cross-signed"')
    found = problems(folder)
    assert "did you mean 'cross-signed-only'" in found[0]


def test_consent_version_changes_with_the_text(folder: Path) -> None:
    before = load_policy(folder).consent
    edit(folder / "en" / "consent.md", "Please take a few minutes", "Please take a moment")
    after = load_policy(folder).consent
    assert after["en"].version != before["en"].version
    assert after["id"].version == before["id"].version
    # A rule the text quotes counts as a change of the text.
    edit(folder / "service.toml", "default_days = 730", "default_days = 365")
    assert load_policy(folder).consent["id"].version != after["id"].version


def test_consent_unknown_placeholder(folder: Path) -> None:
    edit(folder / "id" / "consent.md", "{min_age} tahun", "{min_ages} tahun")
    found = problems(folder)
    assert found[0].startswith("id/consent.md: unknown placeholder {min_ages}")


def test_retention_override_must_be_a_listed_country(folder: Path) -> None:
    edit(folder / "service.toml", "# GB = 2555", "GB = 2555\nIX = 10")
    found = problems(folder)
    assert len(found) == 1 and "retention.countries.IX" in found[0]
    assert "is not a country in crisis.toml" in found[0]


def test_retention_override_applies(folder: Path) -> None:
    edit(folder / "service.toml", "# GB = 2555", "GB = 2555")
    retention = load_policy(folder).service.retention
    assert retention.days_for("gb") == 2555
    assert retention.days_for("ID") == 730
    assert retention.days_for(None) == 730


def test_service_details_are_typed(policy) -> None:
    service = policy.service
    assert service.sla_hours == 12 and service.escalate_hours == 24
    assert service.reassign_hours == 0 and service.dormant_after_days == 14
    assert [o.total_seconds() for o in service.booking.reminder_offsets] == [86400, 900]
    assert service.misfire.mode in ("fire-late", "summarize")
    assert (
        service.topic("grief") is not None
        and service.topic("grief").label["id"] == "Duka dan kehilangan"
    )
    assert service.specialty("career") is not None


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="is not a folder"):
        load_policy(tmp_path / "nope")


def test_template_params_rejects_format_tricks() -> None:
    assert template_params("Hi {name}, {{literal}}") == {"name"}
    for bad in ("{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{unclosed"):
        with pytest.raises(ValueError):
            template_params(bad)


def test_every_message_renders_with_the_params_its_caller_supplies(policy) -> None:
    for lang in policy.languages:
        for key, params in MESSAGE_PARAMS.items():
            text = policy.text(lang, key, **{name: f"<{name}>" for name in params})
            assert text.strip(), (lang, key)
            assert "{" not in text.replace("{{", ""), (lang, key)
