"""Templates: sandboxed, strict, escaped where it matters, reloaded when edited, checked in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.templates import TemplateProblem, TemplateRenderer
from tests.notifier.conftest import REPO_TEMPLATES

ROOT = REPO_TEMPLATES.parent


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier.templates", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_shipped_template_renders_with_its_sample() -> None:
    renderer = TemplateRenderer(REPO_TEMPLATES)
    assert renderer.check() == []
    expected = {"user.registered", "order.created", "order.status_changed", "order.cancelled", "announcement"}
    assert set(renderer.template_names()) == expected
    for name in expected:
        assert renderer.channels_of(name) == ["email", "sms", "push"]


def test_check_command_passes_on_the_shipped_templates() -> None:
    result = run_cli("check")
    assert result.returncode == 0, result.stderr
    assert "5 template(s) render" in result.stdout


def test_check_command_fails_and_names_the_broken_file(templates_dir: Path) -> None:
    (templates_dir / "sms" / "order.created.txt").write_text("Order {{ order.id }")
    (templates_dir / "push" / "order.crated.title.txt").write_text("typo in the file name")

    result = run_cli("--dir", str(templates_dir), "check")

    assert result.returncode == 1
    assert "sms/order.created.txt line 1: syntax error" in result.stderr
    assert "push/order.crated.title.txt: no samples/<name>.json declares this template" in result.stderr


def test_render_command_prints_a_preview() -> None:
    result = run_cli("render", "order.created", "sms")
    assert result.returncode == 0, result.stderr
    assert "Order 3b2f7d8e-5a4c-4e1f-9a0b-7c6d5e4f3a21 received: 44.98 EUR." in result.stdout


def test_render_command_rejects_an_unknown_template() -> None:
    result = run_cli("render", "no.such", "email")
    assert result.returncode == 1
    assert "no.such" in result.stderr


def touch_later(path: Path) -> None:
    """A later mtime, whatever the clock: a reload must see the change."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_a_good_edit_is_loaded_by_the_next_reload(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    context = renderer.sample_context("user.registered")
    assert renderer.render("user.registered", "sms", context).parts["text"].startswith("Welcome Ada")

    path = templates_dir / "sms" / "user.registered.txt"
    path.write_text("Hi {{ user.name }}, edited by ops.")
    touch_later(path)

    assert renderer.reload().loaded
    assert renderer.ok
    assert (
        renderer.render("user.registered", "sms", context).parts["text"] == "Hi Ada Lovelace, edited by ops."
    )


def test_the_sandbox_refuses_reaching_into_python(templates_dir: Path) -> None:
    (templates_dir / "sms" / "announcement.txt").write_text("{{ message.__class__.__mro__ }}")
    renderer = TemplateRenderer(templates_dir)
    with pytest.raises(TemplateProblem, match=r"sms/announcement\.txt line 1: .*unsafe"):
        renderer.render("announcement", "sms", {"message": "hi", "subject": "s"})


def test_the_sandbox_is_immutable(templates_dir: Path) -> None:
    (templates_dir / "sms" / "announcement.txt").write_text("{{ tags.append('x') }}{{ message }}")
    renderer = TemplateRenderer(templates_dir)
    with pytest.raises(TemplateProblem, match="SecurityError"):
        renderer.render("announcement", "sms", {"message": "hi", "subject": "s", "tags": []})


def test_html_is_escaped_but_text_is_not(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    rendered = renderer.render(
        "announcement", "email", {"subject": "<b>Hi</b>\r\nBcc: x@y", "message": "a < b & c"}
    )
    assert rendered.parts["subject"] == "<b>Hi</b> Bcc: x@y"
    assert rendered.parts["text"] == "a < b & c"
    assert "<p>a &lt; b &amp; c</p>" in rendered.parts["html"]


@pytest.mark.parametrize("name", ["../etc/passwd", "Order", "a/b", "x" * 101])
def test_template_names_cannot_escape_the_folder(name: str) -> None:
    renderer = TemplateRenderer(REPO_TEMPLATES)
    assert not renderer.has(name, "email")
    with pytest.raises(TemplateProblem):
        renderer.render(name, "email", {})


def test_a_missing_required_part_is_a_problem(templates_dir: Path) -> None:
    (templates_dir / "push" / "announcement.body.txt").unlink()
    renderer = TemplateRenderer(templates_dir)
    assert not renderer.has("announcement", "push")
    with pytest.raises(TemplateProblem, match=r"push/announcement\.body\.txt: no such template"):
        renderer.render("announcement", "push", {"subject": "s", "message": "m"})
