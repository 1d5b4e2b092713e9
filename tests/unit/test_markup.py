"""The policy texts' small markdown: a clean plain body, safe HTML, parts a phone holds."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge.kernel import markup
from bridge.kernel.effects import Effects, message_content
from e2ecounsel.casechannel import FIELD, CaseEvent
from e2ecounsel.policy import load_policy

POLICY = load_policy(None)


def test_plain_body_has_no_markers_and_html_has_the_formatting() -> None:
    text = (
        "**Your rights**\n- type `erase` to have *your* data erased\n- [help](https://example.org)"
    )
    assert markup.to_plain(text) == (
        "Your rights\n• type erase to have your data erased\n• help (https://example.org)"
    )
    html = markup.to_html(text)
    assert "<strong>Your rights</strong>" in html
    assert "<ul><li>type <code>erase</code> to have <em>your</em> data erased</li>" in html
    assert '<a href="https://example.org">help</a>' in html


def test_everything_else_is_escaped() -> None:
    html = markup.to_html('<script>alert(1)</script> **<b>x</b>** [x](javascript:alert(1)) "q"')
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "<strong>&lt;b&gt;x&lt;/b&gt;</strong>" in html
    assert "href" not in html, "only https links become links"


@given(st.text(max_size=300))
def test_any_text_gives_html_without_raw_tags(text: str) -> None:
    html = markup.to_html(text)
    stripped = html
    for tag in ("p", "br", "ul", "ol", "li", "strong", "em", "code"):
        stripped = stripped.replace(f"<{tag}>", "").replace(f"</{tag}>", "")
    stripped = stripped.replace("<br>", "")
    stripped = re.sub(r'<a href="https://[^"<>]*">', "", stripped).replace("</a>", "")
    assert "<" not in stripped


def test_messages_are_text_with_html_only_when_there_is_markdown() -> None:
    plain = message_content("Hello there")
    assert plain == {"msgtype": "m.text", "body": "Hello there", "m.mentions": {}}
    marked = message_content("**Hi**", mention="@ana:x")
    assert marked["body"] == "Hi" and marked["formatted_body"] == "<p><strong>Hi</strong></p>"
    assert marked["format"] == "org.matrix.custom.html"
    assert marked["m.mentions"] == {"user_ids": ["@ana:x"]}


def test_the_consent_goes_out_in_short_parts_in_order_with_nothing_lost() -> None:
    for lang in POLICY.languages:
        whole = POLICY.text(lang, "intake.consent", consent_text=POLICY.consent[lang].text)
        parts = markup.split_parts(whole)
        assert len(parts) > 3
        assert all(len(p) <= markup.PART_CHARS for p in parts)
        assert "".join(parts).replace("\n", "") == whole.strip().replace("\n", "")
        # A section heading starts a part, never ends one.
        assert all(not p.rstrip().endswith("**") for p in parts)


def test_say_in_parts_puts_the_case_fact_on_the_last_part() -> None:
    fx = Effects("cause")
    fact = CaseEvent("notice")
    fx.say("!r:x", "a" * 500 + "\n\n" + "b" * 500, parts=True, case=fact)
    assert [c["body"][0] for _r, c in fx.messages] == ["a", "b"]
    assert FIELD not in fx.messages[0][1] and FIELD in fx.messages[1][1]
