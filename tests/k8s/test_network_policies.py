"""Every NetworkPolicy flow is a call the code makes, and every call the code makes is allowed.

The calls are read from what each process is configured with (the same ConfigMaps the pods
get): every address its Settings class holds (a ``*_host`` with its ``*_port``, a ``*_url`` or
``*_endpoint``: DB_HOST, REDIS_HOST, RABBITMQ_HOST, SMTP_HOST, USER_SERVICE_URL with each of its
instances, the providers' URLs, the OTLP endpoint while traces are exported); a Settings class
that gains an address this test does not know fails it. The gateway's upstreams come from
gateway_conf's kubernetes rendering; the metrics ports from the ServiceMonitors and PodMonitors."""

from __future__ import annotations

import copy
import re
from urllib.parse import urlsplit

import pytest
from pydantic_settings import BaseSettings

from gateway_conf.environment import config_from_env
from tests.k8s.manifests import OVERLAYS, Obj, by_kind, containers, find, pod_specs
from tests.k8s.test_policies import SETTINGS, environment, module_of

Flow = tuple[str, str, int]  # source pod, destination pod (or "external"), port
EXTERNAL = "external"
# The addresses a Settings class can hold, and how each is dialed: a host with its port field,
# or a URL (comma-separated instances allowed). http_host is where a service listens.
HOST_PORTS = {"db_host": "db_port", "rabbitmq_host": "rabbitmq_port", "redis_host": "redis_port"} | {
    "smtp_host": "smtp_port"
}
URLS = ("user_service_url", "sms_provider_url", "push_provider_url", "otel_exporter_otlp_endpoint")
LISTENS = {"http_host"}
ADDRESS = re.compile(r"_(host|url|endpoint)$")


def address_fields(settings: type[BaseSettings]) -> set[str]:
    return {name for name in settings.model_fields if ADDRESS.search(name)} - LISTENS


def dials(settings: type[BaseSettings], env: dict[str, str]) -> list[tuple[str, int]]:
    """(host, port) of every connection a process with this environment opens."""
    found: list[tuple[str, int]] = []
    for field in address_fields(settings):
        variable = field.upper()
        if field in HOST_PORTS:
            found.append((env[variable], int(env[HOST_PORTS[field].upper()])))
            continue
        if field == "otel_exporter_otlp_endpoint" and env["OTEL_TRACES_EXPORTER"] != "otlp":
            continue  # common/tracing.py opens no exporter then
        for instance in env[variable].split(","):
            url = urlsplit(instance.strip())
            found.append((str(url.hostname), url.port or (443 if url.scheme == "https" else 80)))
    return found


def operator_pods(objects: list[Obj]) -> dict[str, dict[str, str]]:
    """The labels the operators put on the pods they run (their documented labels)."""
    pods = {"postgres": {"cnpg.io/cluster": find(objects, "Cluster", "postgres")["metadata"]["name"]}}
    pods["rabbitmq"] = {
        "app.kubernetes.io/name": find(objects, "RabbitmqCluster", "rabbitmq")["metadata"]["name"]
    }
    replication = find(objects, "RedisReplication", "redis-replication")["metadata"]["name"]
    # Any Redis pod may be the master after a failover (the operator moves the label), so the
    # policies must allow them all: one pod stands for the set, labelled as the master.
    pods["redis"] = {"app": replication, "redis-role": "master"}
    return pods


def pods_of(objects: list[Obj]) -> dict[str, dict[str, str]]:
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w, _ in pod_specs(objects)}
    return pods | operator_pods(objects)


def matching(pods: dict[str, dict[str, str]], selector: dict[str, str]) -> set[str]:
    return {name for name, labels in pods.items() if selector.items() <= labels.items()}


def service_target(objects: list[Obj], pods: dict[str, dict[str, str]], host: str, port: int) -> set[Flow]:
    """(pod, container port) behind a host:port the code dials, for a Service of this namespace."""
    if host == f"{find(objects, 'Cluster', 'postgres')['metadata']['name']}-rw":
        return {("", "postgres", port)}  # CloudNativePG's Service for the primary
    if host == find(objects, "RabbitmqCluster", "rabbitmq")["metadata"]["name"]:
        return {("", "rabbitmq", port)}  # the operator's client Service, AMQP on 5672
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    if host not in services:
        return {("", EXTERNAL, port)}
    service = services[host]
    (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    targets = set()
    for pod in matching(pods, service["spec"]["selector"]):
        target = entry.get("targetPort", port)
        if isinstance(target, str):
            workload = find(objects, "Deployment", pod)["spec"]["template"]["spec"]
            (target,) = [
                p["containerPort"]
                for _, c in containers(workload)
                for p in c.get("ports", [])
                if p.get("name") == target
            ]
        targets.add(("", pod, int(target)))
    assert targets, f"Service {host} selects no pod"
    return targets


def code_flows(objects: list[Obj]) -> set[Flow]:
    pods = pods_of(objects)
    flows: set[Flow] = set()
    for workload, pod in pod_specs(objects):
        source = workload["metadata"]["name"]
        for kind, container in containers(pod):
            module = module_of(container)
            if module not in SETTINGS or kind == "initContainers":
                continue
            for host, port in dials(SETTINGS[module], environment(objects, container)):
                flows |= {(source, dst, p) for _, dst, p in service_target(objects, pods, host, port)}
    gateway_env = find(objects, "ConfigMap", "gateway-config")["data"]
    for servers in config_from_env("kubernetes", gateway_env).upstreams.values():
        for server in servers:
            upstream, _, upstream_port = server.rpartition(":")
            targets = service_target(objects, pods, upstream, int(upstream_port))
            flows |= {("gateway", dst, p) for _, dst, p in targets}
    return flows


def policy_flows(objects: list[Obj], direction: str, *, app_only: bool) -> set[Flow]:
    pods = pods_of(objects)
    flows: set[Flow] = set()
    for policy in by_kind(objects, "NetworkPolicy"):
        if app_only and policy["metadata"]["annotations"]["microservices-app/flow"] != "app":
            continue
        selected = matching(pods, policy["spec"]["podSelector"].get("matchLabels", {}))
        for rule in policy["spec"].get(direction, []):
            peers: set[str] = set()
            for peer in rule.get("to" if direction == "egress" else "from", []):
                if "ipBlock" in peer:
                    peers.add(EXTERNAL)
                elif "namespaceSelector" not in peer:
                    peers |= matching(pods, peer["podSelector"].get("matchLabels", {}))
            ports = {p["port"] for p in rule.get("ports", [])}
            for here in selected:
                for there in peers:
                    for port in ports:
                        flows.add((here, there, port) if direction == "egress" else (there, here, port))
    return flows


def test_every_address_a_settings_class_holds_is_one_the_flows_know() -> None:
    for module, settings in SETTINGS.items():
        unknown = address_fields(settings) - HOST_PORTS.keys() - set(URLS)
        assert not unknown, f"{module}: how is {sorted(unknown)} dialed? add it to HOST_PORTS or URLS"
    assert "user_service_url" in address_fields(SETTINGS["order_api"])


def test_exporting_traces_is_a_call_the_policies_must_allow(rendered: dict[str, list[Obj]]) -> None:
    """OTEL_TRACES_EXPORTER=otlp in an overlay makes the OTLP endpoint a call of every service, so
    the test above fails until a policy allows it (the base exports nothing: no collector yet)."""
    objects = copy.deepcopy(rendered["production"])
    runtime = find(objects, "ConfigMap", "runtime")
    runtime["data"]["OTEL_TRACES_EXPORTER"] = "none"
    quiet = code_flows(objects)
    runtime["data"]["OTEL_TRACES_EXPORTER"] = "otlp"
    port = urlsplit(runtime["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]).port
    services = {"user-api", "order-api", "notifier", "workers"}
    assert code_flows(objects) - quiet == {(source, EXTERNAL, port) for source in services}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_allowed_flow_is_a_call_the_code_makes(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    calls = code_flows(objects)
    infrastructure = set(operator_pods(objects))
    egress = policy_flows(objects, "egress", app_only=True)
    ingress = {f for f in policy_flows(objects, "ingress", app_only=False) if f[0] not in infrastructure}
    assert egress - calls == set(), "egress allowed with no call in the code"
    assert ingress - calls == set(), "ingress allowed with no call in the code"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_call_the_code_makes_is_allowed_both_ways(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    calls = code_flows(objects)
    assert {dst for _, dst, _ in calls} >= {
        "user-api",
        "order-api",
        "notifier",
        "postgres",
        "rabbitmq",
        "redis",
    }
    egress = policy_flows(objects, "egress", app_only=False)
    ingress = policy_flows(objects, "ingress", app_only=False)
    assert calls - egress == set(), "calls the egress policies block"
    assert {c for c in calls if c[1] != EXTERNAL} - ingress == set(), "calls the ingress policies block"


def test_the_edge_and_prometheus_reach_only_their_ports(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    (edge,) = policies["gateway"]["ingress"]
    gateway = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    (nginx,) = [c for c in gateway["containers"] if c["name"] == "nginx"]
    assert "from" not in edge
    assert {p["port"] for p in edge["ports"]} == {p["containerPort"] for p in nginx["ports"]}
    scraped = set()
    for monitor in by_kind(objects, "ServiceMonitor") + by_kind(objects, "PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        for endpoint in monitor["spec"].get("endpoints", []) + monitor["spec"].get("podMetricsEndpoints", []):
            for workload, pod in pod_specs(objects):
                if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items():
                    for _, container in containers(pod):
                        scraped |= {
                            p["containerPort"]
                            for p in container.get("ports", [])
                            if p.get("name") == endpoint["port"]
                        }
    (scrape,) = policies["prometheus-scrapes"]["ingress"]
    assert {p["port"] for p in scrape["ports"]} == scraped
