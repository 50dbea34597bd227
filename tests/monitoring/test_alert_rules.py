"""Alert rules: valid, unit-tested by promtool (a firing and a silent case each), documented."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.monitoring.helpers import (
    PENDING_METRICS,
    PROMETHEUS_DIR,
    RULE_TESTS_DIR,
    RULES_DIR,
    RUNBOOKS,
    alerting_rules,
    code_metric_names,
    exporter_metric_names,
    load_rule_tests,
    metric_names,
    recording_rules,
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
    "TargetMissing",
    "QueueWithoutConsumers",
    "OrderCreationAvailabilityBudgetBurn",
    "OrderCreationLatencyBudgetBurn",
    "LoginAvailabilityBudgetBurn",
    "LoginLatencyBudgetBurn",
}
ALL_ALERT_RULES = alerting_rules()
ALERTS = {rule["alert"]: rule for rule in ALL_ALERT_RULES}


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


RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_url_is_the_one_base_and_the_alerts_own_section(alert: str) -> None:
    # Every rule of that name (TargetMissing has one per job, the SLO alerts two) links the same place.
    urls = {rule["annotations"]["runbook_url"] for rule in ALL_ALERT_RULES if rule["alert"] == alert}
    assert urls == {f"{RUNBOOK_BASE}#{github_anchor(alert)}"}
    assert github_anchor(alert) in runbook_sections()


def test_every_runbook_url_expands_to_an_absolute_link(promtool: str) -> None:
    # The promtool cases render the annotation with a base; each expected link must be absolute.
    links = {
        annotation["exp_annotations"]["runbook_url"]
        for suite in load_rule_tests().values()
        for test in suite["tests"]
        for check in test.get("alert_rule_test", [])
        for annotation in check["exp_alerts"] or []
    }
    assert links
    assert all(link.startswith("https://runbooks.example/docs/runbooks.md#") for link in links)
    anchors = {link.partition("#")[2] for link in links}
    assert anchors - set(runbook_sections()) == set()


def test_every_scraped_job_has_an_absent_alert() -> None:
    # A target that vanishes from discovery has no `up` at all: only absent() sees it.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]} - {"prometheus"}
    absent = {
        re.fullmatch(r'absent\(up\{job="(\w+)"\}\)', rule["expr"].strip()).group(1)  # type: ignore[union-attr]
        for rule in ALL_ALERT_RULES
        if rule["alert"] == "TargetMissing"
    }
    assert absent == jobs
    assert all(
        rule["labels"]["service"] == rule["expr"].split('"')[1]
        for rule in ALL_ALERT_RULES
        if rule["alert"] == "TargetMissing"
    )


def test_service_down_names_the_service_its_latency_alerts_carry() -> None:
    # Alertmanager's inhibition matches on `service`: ServiceDown must carry it like the latency alerts.
    assert ALERTS["ServiceDown"]["labels"]["service"] == "{{ $labels.job }}"
    assert "service" in ALERTS["HighLatencyP95"]["expr"]


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_says_what_it_means_how_to_confirm_and_how_to_fix(alert: str) -> None:
    section = runbook_sections().get(github_anchor(alert), "")
    headings = set(re.findall(r"^### (.+)$", section, flags=re.MULTILINE))
    assert headings >= {"What it means", "How to confirm", "How to fix"}


def test_rules_use_only_metrics_that_exist() -> None:
    known = code_metric_names() | exporter_metric_names()
    recorded = {rule["record"] for rule in recording_rules()}
    used = {
        name for rule in ALL_ALERT_RULES + recording_rules() for name in metric_names(rule["expr"])
    } - recorded
    assert used - known == set()
    assert used & set(PENDING_METRICS) == set(), "an alert must not depend on a metric nobody emits yet"
