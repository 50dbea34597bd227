"""End to end, with real programs on free ports: a scraped target stops → Prometheus fires the
real ServiceDown rule → Alertmanager (the rendered configuration) → the development receiver and
the SMTP server get it, with its labels and its absolute runbook link.

Only the timings are the test's own: scrapes and evaluations every second, each rule's `for:`
cut to 2 s, Alertmanager's group waits to 1 s, and Prometheus resending firing alerts every second
(an alert that fires before Prometheus has found its Alertmanager is otherwise sent a minute
later). Everything else is the shipped configuration: monitoring/prometheus/prometheus.host.yml
(external label, alert relabelling), rules/alerts.yml, notifier.alertmanager_config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.alertmanager_config import AlertingSettings, write
from tests.monitoring.helpers import PROMETHEUS_DIR, RULES_DIR, poll, tool_or_skip
from tests.net import free_port, stop_process, wait_for_port

pytestmark = pytest.mark.slow

RUNBOOK_BASE = "https://runbooks.example/docs/runbooks.md"
# Long enough for a loaded two-core machine; the alert normally arrives in about five seconds.
DEADLINE_S = 90.0


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    sink: str
    mail: str
    target: subprocess.Popen[bytes]
    target_port: int


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test servers
        return json.loads(response.read())


def post_json(url: str, body: Any) -> None:
    request = urllib.request.Request(  # noqa: S310
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310
        pass


def is_ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:  # noqa: S310
        return bool(response.status == 200)


def wait_until(what: str, probe: Callable[[], Any]) -> Any:
    return poll(what, probe, DEADLINE_S, every_s=0.25)


def start(command: list[str], port: int, what: str, log: Path, env: dict[str, str] | None = None) -> Any:
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, process, what, seconds=30)
    except RuntimeError:
        stop_process(process)
        pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
    return process


def prometheus_config(target_port: int, alertmanager_port: int) -> dict[str, Any]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.host.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="900ms", evaluation_interval="1s")
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}
    ]
    config["scrape_configs"] = [
        {"job_name": "order_api", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
    ]
    config["rule_files"] = ["rules/*.yml"]
    return dict(config)


def short_rules() -> dict[str, Any]:
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                # absent(up{job=...}) holds until the first scrape lands, which a loaded CI machine
                # can delay past 2 s: TargetMissing gets room for it, or order_api's would fire too.
                rule["for"] = "15s" if rule.get("alert") == "TargetMissing" else "2s"
    return dict(rules)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = tool_or_skip("prometheus", "prometheus")
    alertmanager_bin = tool_or_skip("prometheus-alertmanager", "prometheus-alertmanager")
    root = tmp_path_factory.mktemp("alerting")
    ports = {name: free_port() for name in ("target", "prometheus", "alertmanager", "sink", "smtp", "mail")}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        (root / "www").mkdir()
        (root / "www" / "metrics").write_text("# TYPE probe_ok gauge\nprobe_ok 1\n")
        target = start(
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(root / "www"),
                str(ports["target"]),
            ],
            ports["target"],
            "target",
            root / "target.log",
        )
        processes.append(target)
        processes.append(
            start(
                [sys.executable, "-m", "notifier.alert_sink", "--port", str(ports["sink"])],
                ports["sink"],
                "alert sink",
                root / "sink.log",
            )
        )
        processes.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "notifier.smtp_sink",
                    "--port",
                    str(ports["smtp"]),
                    "--http-port",
                    str(ports["mail"]),
                    "--maildir",
                    str(root / "mail"),
                ],
                ports["mail"],
                "smtp sink",
                root / "smtp.log",
            )
        )
        settings = AlertingSettings(
            app_env="test",
            alert_sink_url=f"http://127.0.0.1:{ports['sink']}/alerts",
            alert_email_to="oncall@example.com",
            smtp_host="127.0.0.1",
            smtp_port=ports["smtp"],
            alert_group_wait="1s",
            alert_critical_group_wait="1s",
            alert_group_interval="1s",
        )
        write(settings, root / "alertmanager.yml")
        processes.append(
            start(
                [
                    alertmanager_bin,
                    f"--config.file={root / 'alertmanager.yml'}",
                    f"--storage.path={root / 'alertmanager'}",
                    f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                    "--cluster.listen-address=",
                ],
                ports["alertmanager"],
                "alertmanager",
                root / "alertmanager.log",
            )
        )
        (root / "rules").mkdir()
        (root / "rules" / "alerts.yml").write_text(yaml.safe_dump(short_rules()))
        config = prometheus_config(ports["target"], ports["alertmanager"])
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        processes.append(
            start(
                [
                    prometheus_bin,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                    "--enable-feature=expand-external-labels",
                    "--rules.alert.resend-delay=1s",
                ],
                ports["prometheus"],
                "prometheus",
                root / "prometheus.log",
                env={**os.environ, "RUNBOOK_BASE_URL": RUNBOOK_BASE},
            )
        )
        for url in (f"http://127.0.0.1:{ports['prometheus']}", f"http://127.0.0.1:{ports['alertmanager']}"):
            wait_until(f"{url}/-/ready", lambda url=url: is_ready(url))
        yield Stack(
            prometheus=f"http://127.0.0.1:{ports['prometheus']}",
            alertmanager=f"http://127.0.0.1:{ports['alertmanager']}",
            sink=f"http://127.0.0.1:{ports['sink']}",
            mail=f"http://127.0.0.1:{ports['mail']}",
            target=target,
            target_port=ports["target"],
        )
    finally:
        for process in reversed(processes):
            stop_process(process)


def received(stack: Stack, alertname: str) -> list[dict[str, Any]]:
    items = get_json(f"{stack.sink}/alerts?alertname={alertname}&status=firing")["items"]
    return list(items)


def test_a_stopped_target_reaches_the_receiver_with_labels_and_runbook(stack: Stack) -> None:
    def target_is_up() -> bool:
        result = get_json(f"{stack.prometheus}/api/v1/query?query=up")["data"]["result"]
        return [series["value"][1] for series in result] == ["1"]

    wait_until("scrape of the target", target_is_up)
    assert received(stack, "ServiceDown") == []

    stop_process(stack.target)
    (alert,) = wait_until("ServiceDown at the receiver", lambda: received(stack, "ServiceDown"))

    assert alert["receiver"] == "oncall-critical"
    assert alert["labels"] == {
        "alertname": "ServiceDown",
        "severity": "critical",
        "job": "order_api",
        "service": "order_api",
        "instance": f"127.0.0.1:{stack.target_port}",
    }
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#servicedown"
    assert alert["annotations"]["summary"].startswith("order_api on 127.0.0.1:")


def test_a_job_without_targets_fires_target_missing(stack: Stack) -> None:
    # Only order_api is configured here: every other job of the rules has no target at all.
    alerts = wait_until("TargetMissing at the receiver", lambda: received(stack, "TargetMissing"))
    jobs = {alert["labels"]["job"] for alert in alerts}
    assert {"workers", "user_api", "gateway"} <= jobs
    assert "order_api" not in jobs
    assert all(alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#targetmissing" for alert in alerts)


def test_the_alert_is_mailed_through_the_smtp_server(stack: Stack) -> None:
    def mail() -> list[str]:
        subjects = [message["subject"] for message in get_json(f"{stack.mail}/messages")["items"]]
        return [subject for subject in subjects if "ServiceDown" in subject]

    (subject, *_) = wait_until("alert e-mail", mail)
    assert subject.startswith("[FIRING")


def test_service_down_inhibits_that_services_latency_alert(stack: Stack) -> None:
    now = datetime.now(UTC)
    window = {"startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}
    post_json(
        f"{stack.alertmanager}/api/v2/alerts",
        [
            {
                "labels": {"alertname": "ServiceDown", "severity": "critical", "service": "inhibit-a"},
                **window,
            },
            {
                "labels": {"alertname": "HighLatencyP95", "severity": "warning", "service": "inhibit-a"},
                **window,
            },
            {
                "labels": {"alertname": "HighLatencyP95", "severity": "warning", "service": "inhibit-b"},
                **window,
            },
        ],
    )

    def states() -> dict[str, str] | None:
        alerts = get_json(f"{stack.alertmanager}/api/v2/alerts?filter=alertname%3D%22HighLatencyP95%22")
        found = {alert["labels"]["service"]: alert["status"]["state"] for alert in alerts}
        return found if found.get("inhibit-a") == "suppressed" else None

    assert wait_until("inhibition", states) == {"inhibit-a": "suppressed", "inhibit-b": "active"}
