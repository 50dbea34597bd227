"""Templates: sandboxed, strict, escaped where it matters, reloaded all-or-nothing when edited, checked."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from notifier.templates import ReloadResult, TemplateProblem, TemplateRenderer
from tests.integration.notifier.conftest import REPO_TEMPLATES
from tests.integration.notifier.template_flow import ORDER_SUBJECT, SHIPPED_ORDER_SUBJECT, save

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


def test_a_good_edit_is_loaded_by_the_next_reload(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    context = renderer.sample_context("user.registered")
    assert renderer.render("user.registered", "sms", context).parts["text"].startswith("Welcome Ada")

    save(templates_dir, "sms/user.registered.txt", "Hi {{ user.name }}, edited by ops.")

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


# --- reloading: all-or-nothing ----------------------------------------------------------------

ORDER_ID = "3b2f7d8e-5a4c-4e1f-9a0b-7c6d5e4f3a21"  # templates/samples/order.created.json


def reload_ok_metric() -> float | None:
    return REGISTRY.get_sample_value("templates_last_reload_ok")


def test_a_typo_is_rejected_and_the_last_good_set_keeps_serving(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    context = renderer.sample_context("order.created")
    old_subject = renderer.render("order.created", "email", context).parts["subject"]
    serving = renderer.fingerprint

    save(templates_dir, ORDER_SUBJECT, "BROKEN {{ order.id ")
    with capture_logs() as logs:
        result = renderer.reload()

    assert (result.changed, result.loaded) == (True, False)
    assert not renderer.ok
    [problem] = result.problems
    assert (problem.file, problem.line) == ("email/order.created.subject.txt", 1)
    assert renderer.fingerprint == serving
    assert renderer.render("order.created", "email", context).parts["subject"] == old_subject
    assert reload_ok_metric() == 0
    [rejected] = [entry for entry in logs if entry["event"] == "templates_reload_rejected"]
    assert rejected["log_level"] == "error"
    assert (rejected["template_file"], rejected["template_line"]) == ("email/order.created.subject.txt", 1)
    assert "unexpected end of template" in rejected["error"]


def test_the_fix_or_a_rollback_is_loaded_by_the_next_reload(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    save(templates_dir, ORDER_SUBJECT, "BROKEN {{ order.id ")
    assert not renderer.reload().loaded

    save(templates_dir, ORDER_SUBJECT, SHIPPED_ORDER_SUBJECT)  # rolled back to what serves

    assert renderer.reload().problems == ()
    assert renderer.ok
    assert reload_ok_metric() == 1

    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")
    assert renderer.reload().loaded
    context = renderer.sample_context("order.created")
    assert (
        renderer.render("order.created", "email", context).parts["subject"] == f"Order {ORDER_ID} confirmed"
    )


def test_one_broken_file_keeps_every_other_edit_out_too(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    save(templates_dir, "sms/order.created.txt", "Edited: {{ order.id }}")
    save(templates_dir, ORDER_SUBJECT, "{% if %}")

    assert not renderer.reload().loaded
    context = renderer.sample_context("order.created")
    assert not renderer.render("order.created", "sms", context).parts["text"].startswith("Edited")


def test_a_variable_the_sample_does_not_have_is_rejected(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    save(templates_dir, ORDER_SUBJECT, "Order {{ order.coupon_code }}")

    result = renderer.reload()

    assert not result.loaded
    assert "email/order.created.subject.txt line 1" in str(result.problems[0])
    assert "coupon_code" in str(result.problems[0])


def test_an_untouched_folder_is_not_checked_again(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    assert renderer.reload() == ReloadResult(changed=False, loaded=False, problems=())
    (templates_dir / "sms" / "order.created.txt").touch()  # saved without a change
    assert not renderer.reload().loaded
    assert renderer.ok


def test_a_folder_broken_at_start_serves_what_renders_until_it_is_fixed(templates_dir: Path) -> None:
    save(templates_dir, ORDER_SUBJECT, "BROKEN {{ order.id ")

    renderer = TemplateRenderer(templates_dir)  # nothing better to serve than the folder as it is

    assert not renderer.ok
    assert reload_ok_metric() == 0
    context = renderer.sample_context("order.created")
    assert renderer.render("order.created", "sms", context).parts["text"].startswith(f"Order {ORDER_ID}")
    with pytest.raises(TemplateProblem, match=r"email/order\.created\.subject\.txt line 1"):
        renderer.render("order.created", "email", context)

    save(templates_dir, ORDER_SUBJECT, SHIPPED_ORDER_SUBJECT)
    assert renderer.reload().loaded
    subject = renderer.render("order.created", "email", context).parts["subject"]
    assert subject == f"We received your order {ORDER_ID}"


def test_the_check_command_decides_as_the_reload_does(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    save(templates_dir, ORDER_SUBJECT, "BROKEN {{ order.id ")

    problems = renderer.reload().problems
    result = run_cli("--dir", str(templates_dir), "check")

    assert result.returncode == 1
    assert [f"error: {problem}" for problem in problems] == result.stderr.splitlines()[:-1]


def test_the_pre_commit_hook_runs_the_check_on_template_changes(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    [hook] = [h for repo in config["repos"] for h in repo["hooks"] if h["id"] == "notification-templates"]
    assert re.match(hook["files"], "templates/email/order.created.subject.txt")
    assert not re.match(hook["files"], "notifier/templates/__init__.py")
    program, *args = shlex.split(hook["entry"])
    assert (program, args[:2]) == ("python", ["-m", "notifier.templates"])

    def run_hook(cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )

    assert run_hook(ROOT).returncode == 0
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    save(tmp_path / "templates", ORDER_SUBJECT, "BROKEN {{ order.id ")
    broken = run_hook(tmp_path)
    assert broken.returncode == 1
    assert "email/order.created.subject.txt line 1: syntax error" in broken.stderr


def test_a_reread_sees_a_change_that_kept_size_and_mtime(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    path = templates_dir / ORDER_SUBJECT
    stat = path.stat()
    path.write_text("X" + path.read_text()[1:])  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # saved within one mtime tick

    assert not renderer.reload().changed
    assert renderer.reload(reread=True).loaded
    context = renderer.sample_context("order.created")
    assert renderer.render("order.created", "email", context).parts["subject"].startswith("X")


def test_a_rejected_version_is_reported_once_however_often_it_is_reread(templates_dir: Path) -> None:
    renderer = TemplateRenderer(templates_dir)
    save(templates_dir, ORDER_SUBJECT, "BROKEN {{ order.id ")
    assert renderer.reload().changed

    with capture_logs() as logs:
        again = renderer.reload(reread=True)

    assert (again.changed, again.loaded, len(again.problems)) == (False, False, 1)
    assert logs == []
    assert not renderer.ok
