"""The two Prometheus configurations (compose and host mode) and the script that runs host mode."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.monitoring.helpers import PROMETHEUS_DIR, ROOT
from workers.settings import WorkerSettings

COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
HOST_CONFIG = PROMETHEUS_DIR / "prometheus.host.yml"
MONITORING_SCRIPT = ROOT / "scripts" / "monitoring.sh"


def jobs(path: Any) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(path.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def static_targets(job: dict[str, Any]) -> set[str]:
    return {target for group in job.get("static_configs", []) for target in group["targets"]}


@pytest.mark.parametrize("config", [COMPOSE_CONFIG, HOST_CONFIG], ids=["compose", "host"])
def test_promtool_accepts_the_config_and_its_rule_files(promtool: str, config: Any) -> None:
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_and_host_mode_scrape_the_same_jobs() -> None:
    # Rules and dashboards select on job names; both modes must offer the same ones.
    assert set(jobs(COMPOSE_CONFIG)) == set(jobs(HOST_CONFIG))


def test_every_component_is_scraped() -> None:
    expected = {"prometheus", "gateway", "user_api", "order_api", "notifier", "workers"}
    expected |= {"rabbitmq", "rabbitmq_queues", "postgresql", "redis", "alertmanager"}
    assert set(jobs(HOST_CONFIG)) == expected


@pytest.mark.parametrize(
    ("job", "targets"),
    [
        ("user_api", {"127.0.0.1:8081", "127.0.0.1:8091"}),
        ("order_api", {"127.0.0.1:8082", "127.0.0.1:8092"}),
        ("notifier", {"127.0.0.1:8083"}),
        ("workers", {"127.0.0.1:9191"}),
        ("gateway", {"127.0.0.1:9113"}),
        ("rabbitmq", {"127.0.0.1:15692"}),
        ("rabbitmq_queues", {"127.0.0.1:15692"}),
        ("postgresql", {"127.0.0.1:9187"}),
        ("redis", {"127.0.0.1:9121"}),
        ("alertmanager", {"127.0.0.1:9093"}),
    ],
)
def test_host_mode_targets_every_instance(job: str, targets: set[str]) -> None:
    assert static_targets(jobs(HOST_CONFIG)[job]) == targets


def test_workers_are_scraped_on_the_port_the_workers_serve() -> None:
    port = WorkerSettings.model_fields["workers_metrics_port"].default
    assert static_targets(jobs(HOST_CONFIG)["workers"]) == {f"127.0.0.1:{port}"}
    assert jobs(COMPOSE_CONFIG)["workers"]["dns_sd_configs"][0]["port"] == port


@pytest.mark.parametrize(
    ("job", "name", "port"),
    [
        ("user_api", "user-service", 8081),
        ("order_api", "order-service", 8082),
        ("notifier", "notification-service", 8083),
        ("workers", "workers", 9191),
    ],
)
def test_compose_finds_every_replica_by_service_name(job: str, name: str, port: int) -> None:
    (discovery,) = jobs(COMPOSE_CONFIG)[job]["dns_sd_configs"]
    assert (discovery["names"], discovery["type"], discovery["port"]) == ([name], "A", port)


@pytest.mark.parametrize("config", [COMPOSE_CONFIG, HOST_CONFIG], ids=["compose", "host"])
def test_queue_depth_comes_from_the_per_queue_endpoint(config: Any) -> None:
    # The plain /metrics endpoint aggregates all queues: no queue label, no dead-letter queue.
    job = jobs(config)["rabbitmq_queues"]
    assert job["metrics_path"] == "/metrics/detailed"
    assert "queue_coarse_metrics" in job["params"]["family"]


def test_monitoring_script_starts_exporters_on_the_ports_prometheus_scrapes() -> None:
    components = dict(re.findall(r'"(\w+)\|(\d+|\$\{[^}]+\})"', MONITORING_SCRIPT.read_text()))
    host_jobs = jobs(HOST_CONFIG)
    assert static_targets(host_jobs["postgresql"]) == {f"127.0.0.1:{components['postgres_exporter']}"}
    assert static_targets(host_jobs["redis"]) == {f"127.0.0.1:{components['redis_exporter']}"}
    assert static_targets(host_jobs["gateway"]) == {f"127.0.0.1:{components['nginx_exporter']}"}


def test_monitoring_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(MONITORING_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_monitoring_script_refuses_an_unknown_command() -> None:
    command = ["bash", str(MONITORING_SCRIPT), "restart-everything"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert (result.returncode, "usage:" in result.stderr) == (1, True), result.stderr


def test_compose_targets_are_services_of_the_compose_file() -> None:
    compose_file = ROOT / "docker-compose.yml"
    if not compose_file.exists():
        pytest.skip("no docker-compose.yml yet")
    services = set(yaml.safe_load(compose_file.read_text())["services"])
    hosts = set()
    for job in jobs(COMPOSE_CONFIG).values():
        hosts |= {target.rsplit(":", 1)[0] for target in static_targets(job)}
        hosts |= {name for discovery in job.get("dns_sd_configs", []) for name in discovery["names"]}
    assert hosts - {"localhost"} - services == set()


@pytest.mark.parametrize(
    ("config", "alertmanager"),
    [(COMPOSE_CONFIG, "alertmanager:9093"), (HOST_CONFIG, "127.0.0.1:9093")],
    ids=["compose", "host"],
)
def test_prometheus_sends_its_alerts_to_alertmanager(config: Any, alertmanager: str) -> None:
    alerting = yaml.safe_load(config.read_text())["alerting"]
    (target,) = static_targets(alerting["alertmanagers"][0])
    assert target == alertmanager
    assert static_targets(jobs(config)["alertmanager"]) == {alertmanager}


@pytest.mark.parametrize("config", [COMPOSE_CONFIG, HOST_CONFIG], ids=["compose", "host"])
def test_runbook_base_comes_from_the_environment_and_stays_out_of_notifications(config: Any) -> None:
    loaded = yaml.safe_load(config.read_text())
    assert loaded["global"]["external_labels"] == {"runbook_base_url": "${RUNBOOK_BASE_URL}"}
    assert {"action": "labeldrop", "regex": "runbook_base_url"} in loaded["alerting"]["alert_relabel_configs"]


def test_both_launchers_expand_the_runbook_base_and_always_set_it() -> None:
    script = MONITORING_SCRIPT.read_text()
    assert "--enable-feature=expand-external-labels" in script
    assert 'RUNBOOK_BASE_URL="${RUNBOOK_BASE_URL:-' in script
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    assert "--enable-feature=expand-external-labels" in compose["command"]
    assert compose["environment"]["RUNBOOK_BASE_URL"].startswith("${RUNBOOK_BASE_URL:-")


def test_monitoring_script_runs_alertmanager_and_the_development_receiver() -> None:
    script = MONITORING_SCRIPT.read_text()
    assert "launch alertmanager prometheus-alertmanager" in script
    assert "--web.listen-address=127.0.0.1:9093" in script
    assert "notifier.alertmanager_config --out" in script
    assert "launch alert_sink" in script
    assert '"alertmanager|9093"' in script


def test_compose_runs_alertmanager_with_the_rendered_config() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    render = services["alertmanager-config"]
    assert render["command"][:3] == ["python", "-m", "notifier.alertmanager_config"]
    assert render["environment"]["ALERT_SINK_URL"] == "http://alert-sink:9095/alerts"
    alertmanager = services["alertmanager"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert alertmanager["depends_on"]["alertmanager-config"]["condition"] == "service_completed_successfully"
    assert services["alert-sink"]["command"][:3] == ["python", "-m", "notifier.alert_sink"]
