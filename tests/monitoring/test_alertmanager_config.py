"""Alertmanager's rendered configuration: amtool accepts it, routes each severity where it should,
sends through the configured SMTP server and webhooks, and keeps the development receiver out of
staging and production."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import SettingsError, load_settings
from notifier.alertmanager_config import CRITICAL, WARNING, AlertingSettings, main, render, write

FULL = {
    "app_env": "development",
    "alert_email_to": "oncall@example.com, lead@example.com",
    "alert_webhook_url": "https://relay.example/alertmanager",
    "alert_slack_webhook_url": "https://hooks.slack.example/services/T0/B0/x",
    "alert_pagerduty_routing_key": "0123456789abcdef0123456789abcdef",
    "smtp_host": "smtp.example.com",
    "smtp_port": 587,
    "smtp_starttls": True,
    "smtp_username": "alerts@example.com",
    "smtp_password": "an-app-password",
}


def settings(**overrides: Any) -> AlertingSettings:
    return load_settings(AlertingSettings, **overrides)


def rendered(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "alertmanager.yml"
    write(settings(**overrides), path)
    return path


def receiver(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r for r in config["receivers"] if r["name"] == name]
    return dict(found)


def routes_test(amtool: str, path: Path, *labels: str) -> str:
    command = [amtool, "config", "routes", "test", f"--config.file={path}", *labels]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    "overrides",
    [
        FULL,
        {"app_env": "development"},
        {"app_env": "production", "alert_webhook_url": "https://relay.example/x"},
        {"app_env": "staging", "alert_email_to": "ops@example.com", "smtp_port": 465, "smtp_use_tls": True},
    ],
    ids=["everything", "development-defaults", "production-webhook", "staging-implicit-tls"],
)
def test_amtool_accepts_the_rendered_config(amtool: str, tmp_path: Path, overrides: dict[str, Any]) -> None:
    path = rendered(tmp_path, **overrides)
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["severity=critical", "alertname=ServiceDown", "service=workers"], CRITICAL),
        (
            ["severity=critical", "alertname=OrderCreationAvailabilityBudgetBurn", "service=order_api"],
            CRITICAL,
        ),
        (["severity=warning", "alertname=HighLatencyP95", "service=user_api"], WARNING),
        (["severity=info", "alertname=Something"], WARNING),
        (["alertname=NoSeverityAtAll"], WARNING),
    ],
)
def test_routes_by_severity(amtool: str, tmp_path: Path, labels: list[str], expected: str) -> None:
    assert routes_test(amtool, rendered(tmp_path, **FULL), *labels) == expected


def test_groups_by_alert_service_and_vhost_and_pages_sooner_for_critical() -> None:
    route = render(settings(**FULL))["route"]
    critical = next(r for r in route["routes"] if r["receiver"] == CRITICAL)
    assert route["group_by"] == ["alertname", "service", "vhost"]
    assert (critical["group_wait"], route["group_wait"]) == ("5s", "30s")
    assert (critical["group_interval"], route["group_interval"]) == ("1m", "5m")


def test_service_down_inhibits_that_services_latency_alerts() -> None:
    rules = render(settings(**FULL))["inhibit_rules"]
    down = next(rule for rule in rules if "ServiceDown" in rule["source_matchers"][0])
    assert "HighLatencyP95" in down["target_matchers"][0]
    assert "LoginLatencyBudgetBurn" in down["target_matchers"][0]
    assert down["equal"] == ["service"]


def test_email_goes_through_the_configured_smtp_server() -> None:
    (email,) = receiver(render(settings(**FULL)), CRITICAL)["email_configs"]
    assert (email["smarthost"], email["to"], email["require_tls"]) == (
        "smtp.example.com:587",
        "oncall@example.com, lead@example.com",
        True,
    )
    assert (email["auth_username"], email["auth_password"]) == ("alerts@example.com", "an-app-password")
    assert email["from"] == "Microservices App <no-reply@example.com>"


def test_every_receiver_gets_the_webhook_and_only_critical_pages() -> None:
    config = render(settings(**FULL))
    for name in (CRITICAL, WARNING):
        urls = [hook["url"] for hook in receiver(config, name)["webhook_configs"]]
        assert "https://relay.example/alertmanager" in urls
        assert receiver(config, name)["slack_configs"][0]["api_url"].startswith("https://hooks.slack")
    assert "pagerduty_configs" in receiver(config, CRITICAL)
    assert "pagerduty_configs" not in receiver(config, WARNING)


def test_development_sends_everything_to_the_local_receiver_too() -> None:
    config = render(settings(app_env="development"))
    for name in (CRITICAL, WARNING):
        assert receiver(config, name)["webhook_configs"] == [
            {"url": "http://127.0.0.1:9095/alerts", "send_resolved": True}
        ]


def test_production_never_sends_to_the_development_receiver() -> None:
    config = render(settings(app_env="production", alert_email_to="ops@example.com", smtp_password="x"))
    hooks = [hook for r in config["receivers"] for hook in r.get("webhook_configs", [])]
    assert hooks == []


def test_production_without_any_receiver_is_refused() -> None:
    with pytest.raises(SettingsError, match="ALERT_EMAIL_TO"):
        settings(app_env="production")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alert_group_wait": "soon"}, "ALERT_GROUP_WAIT"),
        ({"alert_webhook_url": "relay.example"}, "ALERT_WEBHOOK_URL"),
        ({"alert_email_to": "not an address"}, "ALERT_EMAIL_TO"),
        ({"alert_email_to": "a@example.com", "smtp_use_tls": True, "smtp_port": 587}, "465"),
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings(**overrides)


def test_the_file_is_private_and_says_where_it_comes_from(tmp_path: Path) -> None:
    path = rendered(tmp_path, **FULL)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("# Rendered by python -m notifier.alertmanager_config")
    assert yaml.safe_load(path.read_text()) == render(settings(**FULL))


def test_the_command_line_reports_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALERT_REPEAT_INTERVAL", "forever")
    assert main(["--out", str(tmp_path / "am.yml")]) == 2
    assert "ALERT_REPEAT_INTERVAL" in capsys.readouterr().err
    assert not (tmp_path / "am.yml").exists()


def test_the_file_can_be_handed_to_alertmanagers_user(tmp_path: Path) -> None:
    # In compose the renderer runs as root and gives the file to Alertmanager's user; here, to
    # whoever runs the test (chown to oneself needs no privilege).
    path = tmp_path / "alertmanager.yml"
    path.write_text("stale")
    owner = f"{os.getuid()}:{os.getgid()}"
    assert main(["--out", str(path), "--owner", owner]) == 0
    assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (os.getuid(), 0o600)
    assert yaml.safe_load(path.read_text())["route"]["receiver"] == WARNING


def test_the_command_line_refuses_a_bad_owner(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "am.yml"), "--owner", "nobody"])
