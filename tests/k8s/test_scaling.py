"""Scaling and monitoring objects point at what they scale or watch: a disruption budget and a
spread over zones and nodes for every workload of ours, an HPA for the gateway and the APIs, KEDA
on exactly the work queues of the contract for the workers, and a monitor whose ``job`` is one the
alert rules know for every metrics port."""

from __future__ import annotations

import pytest
import yaml

from common.events import QUEUE_NAMES
from tests.k8s.manifests import OVERLAYS, ROOT, Obj, by_kind, containers, find, pod_specs

APPS = ("gateway", "user-api", "order-api", "notifier", "workers")
HTTP_SCALED = ("gateway", "user-api", "order-api", "notifier")


def labels(objects: list[Obj], name: str) -> dict[str, str]:
    template: dict[str, str] = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return template


def selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return selector.items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget_and_a_spread(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    for name in APPS:
        pod = labels(objects, name)
        budgets = [
            b
            for b in by_kind(objects, "PodDisruptionBudget")
            if selects(b["spec"]["selector"]["matchLabels"], pod)
        ]
        assert len(budgets) == 1, f"{overlay}: {name} has {len(budgets)} PodDisruptionBudgets"
        assert budgets[0]["spec"].get("maxUnavailable") == 1, name
        spread = find(objects, "Deployment", name)["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in spread if selects(c["labelSelector"]["matchLabels"], pod)}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_autoscalers_scale_the_deployments_they_name(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    floor = 1 if overlay == "dev" else 2
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in by_kind(objects, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == set(HTTP_SCALED)  # the workers are KEDA's: two scalers would fight
    for name, spec in hpas.items():
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert floor <= spec["minReplicas"] < spec["maxReplicas"], name
        assert find(objects, "Deployment", name)["spec"]["replicas"] >= spec["minReplicas"], name
        cpu = [m for m in spec["metrics"] if m["type"] == "Resource"]
        assert [m["resource"]["name"] for m in cpu] == ["cpu"], name
    (scaled,) = by_kind(objects, "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "workers"
    assert floor <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    triggers = spec["triggers"]
    assert sorted(t["metadata"]["queueName"] for t in triggers) == sorted(QUEUE_NAMES)
    auths = {a["metadata"]["name"] for a in by_kind(objects, "TriggerAuthentication")}
    assert all(t["type"] == "rabbitmq" and t["authenticationRef"]["name"] in auths for t in triggers)


def alerting_jobs() -> set[str]:
    config = yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    return {job["job_name"] for job in config["scrape_configs"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_metrics_port_of_ours_is_scraped_under_a_known_job(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    known = alerting_jobs()
    scraped: set[tuple[str, str]] = set()
    for monitor in by_kind(objects, "ServiceMonitor") + by_kind(objects, "PodMonitor"):
        endpoints = monitor["spec"].get("endpoints", []) + monitor["spec"].get("podMetricsEndpoints", [])
        for endpoint in endpoints:
            relabelings = endpoint.get("relabelings", [])
            jobs = {r["replacement"] for r in relabelings if r.get("targetLabel") == "job"}
            where = monitor["metadata"]["name"]
            assert len(jobs) == 1, f"{where}: sets job {jobs}"
            assert jobs <= known, f"{where}: job {jobs} is not one of monitoring/prometheus's {known}"
        selector = monitor["spec"]["selector"]["matchLabels"]
        for name in APPS:
            if selects(selector, labels(objects, name)):
                scraped |= {(name, e["port"]) for e in endpoints}
    for workload, pod in pod_specs(objects):
        name = workload["metadata"]["name"]
        if name not in APPS:
            continue
        metrics_ports = {
            p["name"]
            for _, c in containers(pod)
            for p in c.get("ports", [])
            if p.get("name") == "metrics" or (name != "gateway" and p.get("name") == "http")
        }
        assert metrics_ports, name
        # A Service's named port stands for the container's (ServiceMonitors name the Service's).
        for port in metrics_ports:
            assert (name, port) in scraped, f"{overlay}: {name}'s {port} port is scraped by no monitor"
