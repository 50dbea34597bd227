"""Rendering notifications (notifier.templates): a TemplateSet held in memory, no folder needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.templates import TemplateProblem, TemplateSet
from notifier.templates.snapshot import MAX_SINGLE_LINE

SHIPPED = Path(__file__).resolve().parents[2] / "templates"


def templates(files: dict[str, str]) -> TemplateSet:
    return TemplateSet(Path("/in-memory"), files)


def email(
    subject: str = "Hello {{ user.name }}", text: str = "Hi {{ user.name }}", **more: str
) -> TemplateSet:
    """The ``greeting`` template; ``more`` adds files, named with "__" for "/"."""
    files = {
        "samples/greeting.json": '{"user": {"name": "Ada"}}',
        "email/greeting.subject.txt": subject,
        "email/greeting.text.txt": text,
    }
    return templates(files | {name.replace("__", "/"): body for name, body in more.items()})


def test_an_email_renders_its_subject_and_text() -> None:
    rendered = email().render("greeting", "email", {"user": {"name": "Ada"}})
    assert rendered.parts == {"subject": "Hello Ada", "text": "Hi Ada"}


def test_a_subject_is_one_line_whatever_the_context_holds() -> None:
    rendered = email().render("greeting", "email", {"user": {"name": "Ada\r\nBcc: everyone@example.com"}})
    assert "\n" not in rendered.parts["subject"]
    assert "\r" not in rendered.parts["subject"]
    assert rendered.parts["subject"] == "Hello Ada Bcc: everyone@example.com"


def test_a_subject_is_bounded() -> None:
    rendered = email().render("greeting", "email", {"user": {"name": "x" * 1000}})
    assert len(rendered.parts["subject"]) == MAX_SINGLE_LINE


def test_html_is_escaped_and_text_is_not() -> None:
    set_ = email(**{"email__greeting.html": "<p>{{ user.name }}</p>"})
    rendered = set_.render("greeting", "email", {"user": {"name": "<b>Ada</b>"}})
    assert rendered.parts["html"] == "<p>&lt;b&gt;Ada&lt;/b&gt;</p>"
    assert rendered.parts["text"] == "Hi <b>Ada</b>"


def test_a_missing_variable_is_a_problem_naming_file_and_line() -> None:
    set_ = email(text="Hi\n{{ order.id }}")
    with pytest.raises(TemplateProblem) as problem:
        set_.render("greeting", "email", {"user": {"name": "Ada"}})
    assert problem.value.file == "email/greeting.text.txt"
    assert problem.value.line == 2


def test_a_syntax_error_is_a_problem_with_its_line() -> None:
    with pytest.raises(TemplateProblem, match="syntax error") as problem:
        email(subject="{% if %}").render("greeting", "email", {"user": {"name": "Ada"}})
    assert problem.value.line == 1


def test_a_required_part_that_renders_to_nothing_is_a_problem() -> None:
    with pytest.raises(TemplateProblem, match="renders to nothing"):
        email(text="{{ '' }}").render("greeting", "email", {"user": {"name": "Ada"}})


@pytest.mark.parametrize(("template", "channel"), [("greeting", "fax"), ("../etc/passwd", "email")])
def test_unknown_channels_and_unsafe_names_are_problems(template: str, channel: str) -> None:
    with pytest.raises(TemplateProblem):
        email().render(template, channel, {})


def test_the_sandbox_refuses_reaching_into_python() -> None:
    set_ = email(text="{{ user.__class__.__mro__ }}")
    with pytest.raises(TemplateProblem):
        set_.render("greeting", "email", {"user": {"name": "Ada"}})


def test_which_channels_a_template_has() -> None:
    set_ = email(**{"sms__greeting.txt": "Hi"})
    assert set_.channels_of("greeting") == ["email", "sms"]
    assert not set_.has("greeting", "push")


def test_the_fingerprint_follows_the_content() -> None:
    assert email().fingerprint == email().fingerprint
    assert email().fingerprint != email(text="Hello").fingerprint


def test_check_finds_a_template_that_fails_its_own_sample() -> None:
    problems = email(text="{{ user.phone }}").check()
    assert [p.file for p in problems] == ["email/greeting.text.txt"]


def test_check_finds_a_template_no_sample_declares() -> None:
    problems = email(**{"sms__orphan.txt": "Hi"}).check()
    assert [p.file for p in problems] == ["sms/orphan.txt"]


def test_a_clean_set_checks_clean() -> None:
    assert email().check() == []


def test_every_shipped_template_renders_with_its_sample() -> None:
    shipped = TemplateSet.load(SHIPPED)
    assert shipped.check() == []
    assert set(shipped.template_names()) >= {
        "user.registered",
        "order.created",
        "order.status_changed",
        "order.cancelled",
    }
