"""Policies every rendered workload keeps: probes, sizes, a locked-down security context, and
the environment contract (every variable each Settings class reads is set, to a value it accepts)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest
from pydantic_settings import BaseSettings

from common.settings import RabbitSettings, load_settings
from notifier.settings import NotifierSettings
from order_api.settings import Settings as OrderSettings
from tests.k8s.manifests import OVERLAYS, Obj, by_kind, containers, find, pod_specs
from user_api.settings import Settings as UserSettings
from workers.settings import WorkerSettings

# `python -m MODULE` -> the settings that process reads
SETTINGS: dict[str, type[BaseSettings]] = {
    "user_api": UserSettings,
    "order_api": OrderSettings,
    "notifier": NotifierSettings,
    "workers": WorkerSettings,
}
# Read by a process beyond its Settings (as tests/config/test_env_contract.py allows for compose).
READ_ELSEWHERE = {"workers": {"PROMETHEUS_MULTIPROC_DIR"}}
SERVING_PORT = {"user_api": "USER_API_PORT", "order_api": "ORDER_API_PORT", "notifier": "NOTIFIER_PORT"}
APP_ENV = {"dev": "development", "staging": "staging", "production": "production"}
# What the test puts in place of the *.example secrets: production refuses the examples.
TEST_SECRET = "k8s-contract-test-secret-value"


def module_of(container: Obj) -> str | None:
    command = container.get("command", [])
    if command[:2] == ["python", "-m"]:
        return str(command[2])
    return None


def environment(objects: list[Obj], container: Obj, *, secrets_as_given: bool = False) -> dict[str, str]:
    """The variables a container gets (envFrom ConfigMaps, then env), Secrets resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container['name']}: envFrom {source}"
        env.update(find(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secret = find(objects, "Secret", ref["name"])
        assert ref["key"] in secret["data"], f"{container['name']}: Secret {ref['name']} has no {ref['key']}"
        given = base64.b64decode(secret["data"][ref["key"]]).decode()
        env[item["name"]] = given if secrets_as_given else TEST_SECRET
    return env


def app_containers(objects: list[Obj]) -> list[tuple[Obj, Obj, str, Obj, str]]:
    found = []
    for workload, pod in pod_specs(objects):
        for kind, container in containers(pod):
            module = module_of(container)
            if module in SETTINGS:
                found.append((workload, pod, kind, container, module))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for workload, pod in pod_specs(rendered[overlay]):
        name = workload["metadata"]["name"]
        assert pod.get("automountServiceAccountToken") is False, f"{name}: service-account token mounted"
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, name
        for _, container in containers(pod):
            where = f"{name}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security.get("runAsUser", pod_security.get("runAsUser", 0)) != 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("capabilities", {}).get("add"), where
            seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert not security.get("privileged"), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_and_sizes(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for workload, pod in pod_specs(rendered[overlay]):
        for kind, container in containers(pod):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) >= {"cpu", "memory"}, f"{where}: no {bound}"
            if kind == "containers":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in container, f"{where}: no {probe}"


def test_probes_are_the_services_real_endpoints(rendered: dict[str, list[Obj]]) -> None:
    """Liveness /health (common/health.py: the process answers), readiness /health/ready (its
    dependencies do); the workers' only HTTP server is their metrics."""
    for _, _, kind, container, module in app_containers(rendered["production"]):
        if kind != "containers":
            continue
        path = {probe: container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
        if module == "workers":
            assert path == {"livenessProbe": "/metrics", "readinessProbe": "/metrics"}
        else:
            assert path == {"livenessProbe": "/health", "readinessProbe": "/health/ready"}, module


def test_termination_outlasts_the_drain(rendered: dict[str, list[Obj]]) -> None:
    """preStop sleep, then SIGTERM: readiness 503 for SHUTDOWN_DRAIN_S while requests are still
    served, then SHUTDOWN_TIMEOUT_S for those in flight (common/cli.py); the kubelet must wait."""
    objects = rendered["production"]
    for workload, pod in pod_specs(objects):
        name = workload["metadata"]["name"]
        main = pod["containers"][0]
        sleep = 0
        if "lifecycle" in main:
            command = main["lifecycle"]["preStop"]["exec"]["command"]
            assert command[0] == "sleep"
            sleep = int(command[1])
        if module_of(main) in SERVING_PORT:
            assert sleep >= 5, f"{name}: no preStop to let the endpoints update"
            env = environment(objects, main)
            needed = sleep + float(env["SHUTDOWN_DRAIN_S"]) + float(env["SHUTDOWN_TIMEOUT_S"])
            assert pod["terminationGracePeriodSeconds"] > needed, name
            assert float(env["SHUTDOWN_TIMEOUT_S"]) >= 30, f"{name}: requests in flight get ~30 s"
    gateway = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    (prestop,) = [c["lifecycle"]["preStop"] for c in gateway["containers"] if c["name"] == "nginx"]
    # preStop, then nginx's graceful stop (the image's STOPSIGNAL) within proxy_read_timeout (15 s).
    assert gateway["terminationGracePeriodSeconds"] > int(prestop["exec"]["command"][1]) + 15
    workers = find(objects, "Deployment", "workers")["spec"]["template"]["spec"]
    smtp_timeout = float(environment(objects, workers["containers"][0])["SMTP_TIMEOUT_S"])
    assert workers["terminationGracePeriodSeconds"] > smtp_timeout, "a send in hand may finish"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_and_references_resolve(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """What the schemas cannot see: every mount names a volume, every volume an object rendered."""
    objects = rendered[overlay]
    for workload, pod in pod_specs(objects):
        name = workload["metadata"]["name"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for _, container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}/{container['name']}: no volume {mount['name']}"
        for volume in volumes.values():
            if "configMap" in volume:
                find(objects, "ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                secret = find(objects, "Secret", volume["secret"]["secretName"])
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secret["data"], f"{name}: Secret lacks {item['key']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_each_settings_class_reads_is_set(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[overlay]
    seen = set()
    for workload, _, _, container, module in app_containers(objects):
        where = f"{overlay}: {workload['metadata']['name']}/{container['name']} (python -m {module})"
        settings = SETTINGS[module]
        read = {name.upper() for name in settings.model_fields} | READ_ELSEWHERE.get(module, set())
        env = environment(objects, container)
        missing, unknown = read - set(env), set(env) - read
        assert not missing, f"{where} does not set {sorted(missing)} (deploy/k8s/base/config/*.env)"
        assert not unknown, f"{where} is given {sorted(unknown)}, which {settings.__module__} does not read"
        for name in {n.upper() for n in settings.model_fields}:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        loaded: Any = load_settings(settings)  # the production checks (no example secrets) included
        assert loaded.app_env == APP_ENV[overlay], where
        assert loaded.http_host == "0.0.0.0", where
        if module in SERVING_PORT and container.get("ports"):
            port = getattr(loaded, SERVING_PORT[module].lower())
            assert [p["containerPort"] for p in container["ports"]] == [port], where
        seen.add(module)
    assert seen == set(SETTINGS)


def test_addresses_name_the_objects_that_serve_them(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    for workload, pod, _, container, module in app_containers(objects):
        env = environment(objects, container)
        cluster = find(objects, "Cluster", "postgres")["metadata"]["name"]
        assert env["DB_HOST"] == f"{cluster}-rw"  # CloudNativePG's service for the primary
        assert env["RABBITMQ_HOST"] == find(objects, "RabbitmqCluster", "rabbitmq")["metadata"]["name"]
        if "REDIS_HOST" in env:
            assert env["REDIS_HOST"] in services
        if "USER_SERVICE_URL" in env:
            assert env["USER_SERVICE_URL"] == "http://user-api:8081"
            assert services["user-api"]["spec"]["ports"][0]["port"] == 8081
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for variable in ("JWT_PUBLIC_KEY_FILE", "JWT_PRIVATE_KEY_FILE"):
            if variable == "JWT_PRIVATE_KEY_FILE" and module != "user_api":
                continue  # only user_api signs
            if variable not in env or container["command"][-1] == "migrate" or module == "workers":
                continue
            folder, _, file = env[variable].rpartition("/")
            items = {i["path"] for i in volumes[mounts[folder]]["secret"]["items"]}
            assert file in items, f"{workload['metadata']['name']}: {variable} is not mounted"
        if "TEMPLATES_DIR" in env and container["command"][-1] != "migrate":
            for channel in ("email", "sms", "push", "samples"):
                assert f"{env['TEMPLATES_DIR']}/{channel}" in mounts, f"{module}: templates/{channel}"
        if module == "notifier" and container["command"][-1] == "serve":
            private = {i["path"] for i in volumes["jwt"]["secret"]["items"]}
            assert private == {"jwt_public.pem"}, "only user_api gets the private key"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_workers_migrate_their_queues_with_the_workers_broker_settings(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migrate-queues init container (``python -m workers.queues migrate``, RabbitSettings)
    reaches the broker and vhost the workers consume from, before they start."""
    objects = rendered[overlay]
    pod = find(objects, "Deployment", "workers")["spec"]["template"]["spec"]
    (migrate,) = [c for c in pod["initContainers"] if c["command"][:3] == ["python", "-m", "workers.queues"]]
    assert migrate["command"][3:] == ["migrate"]
    read = {name.upper() for name in RabbitSettings.model_fields}
    env = environment(objects, migrate, secrets_as_given=True)
    assert not read - set(env), f"{overlay}: migrate-queues does not set {sorted(read - set(env))}"
    workers = environment(objects, pod["containers"][0], secrets_as_given=True)
    assert {k: env[k] for k in read} == {k: workers[k] for k in read}
    for name in read:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings(RabbitSettings).amqp_url.endswith("/" + quote(workers["RABBITMQ_VHOST"], safe=""))
