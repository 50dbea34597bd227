"""Alert rules: valid, unit-tested by promtool (a firing and a silent case each), documented."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.monitoring.helpers import (
    PENDING_METRICS,
    RULE_TESTS_DIR,
    RULES_DIR,
    RUNBOOKS,
    alerting_rules,
    code_metric_names,
    exporter_metric_names,
    load_rule_tests,
    metric_names,
)

REQUIRED_ALERTS = {
    "ServiceDown",
    "HighErrorRate",
    "HighLatencyP95",
    "DeadLetterQueueNotEmpty",
    "OutboxBacklogStale",
    "CircuitBreakerOpen",
    "QueueDepthGrowing",
    "DatabasePoolSaturated",
    "NotificationFailureRate",
}
ALERTS = {rule["alert"]: rule for rule in alerting_rules()}


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Second-level sections of docs/runbooks.md by anchor."""
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            current = github_anchor(line[3:])
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def cases_for(alert: str) -> list[list[Any]]:
    return [
        check["exp_alerts"] or []
        for suite in load_rule_tests().values()
        for test in suite["tests"]
        for check in test.get("alert_rule_test", [])
        if check["alertname"] == alert
    ]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    files = sorted(str(path) for path in RULES_DIR.glob("*.yml"))
    result = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = sorted(str(path) for path in RULE_TESTS_DIR.glob("*.yml"))
    result = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_exists() -> None:
    assert set(ALERTS) >= REQUIRED_ALERTS


def test_the_seed_service_down_rule_is_kept() -> None:
    rule = ALERTS["ServiceDown"]
    assert ("up == 0" in rule["expr"], rule["for"], rule["labels"]["severity"]) == (True, "1m", "critical")


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_has_a_firing_case(alert: str) -> None:
    assert any(expected for expected in cases_for(alert)), f"no promtool case in which {alert} fires"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_has_a_silent_case(alert: str) -> None:
    silent = [expected for expected in cases_for(alert) if not expected]
    assert silent, f"no promtool case in which {alert} stays silent"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_says_how_bad_and_what_happened(alert: str) -> None:
    rule = ALERTS[alert]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_url_points_at_the_alerts_own_section(alert: str) -> None:
    url = ALERTS[alert]["annotations"]["runbook_url"]
    assert url == f"docs/runbooks.md#{github_anchor(alert)}"
    assert github_anchor(alert) in runbook_sections()


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_says_what_it_means_how_to_confirm_and_how_to_fix(alert: str) -> None:
    section = runbook_sections().get(github_anchor(alert), "")
    headings = set(re.findall(r"^### (.+)$", section, flags=re.MULTILINE))
    assert headings >= {"What it means", "How to confirm", "How to fix"}


def test_rules_use_only_metrics_that_exist() -> None:
    known = code_metric_names() | exporter_metric_names()
    used = {name for rule in ALERTS.values() for name in metric_names(rule["expr"])}
    assert used - known == set()
    assert used & set(PENDING_METRICS) == set(), "an alert must not depend on a metric nobody emits yet"
