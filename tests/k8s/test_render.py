"""Every overlay renders, and every object it renders validates: the built-in kinds against the
Kubernetes 1.30 OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), the
operators' kinds against deploy/k8s/schemas/ (their versions in its README)."""

from __future__ import annotations

import base64
import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest
import yaml

from tests.k8s.manifests import APP_IMAGE, K8S, OVERLAYS, ROOT, Obj, by_kind, find, pod_specs, render

KUBERNETES_VERSION = "1.30.0"
# deploy/k8s/validate.py, a script (deploy/ is no package), loaded from its file.
_spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
assert _spec is not None
assert _spec.loader is not None
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)
CRD_SCHEMAS = validate.crd_schemas()
NAMESPACES = {
    "dev": "microservices-app-dev",
    "staging": "microservices-app-staging",
    "production": "microservices-app",
}


def test_generated_files_are_current() -> None:
    out = subprocess.run(
        [sys.executable, "deploy/k8s/generate.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(rendered: dict[str, list[Obj]], overlay: str) -> None:
    assert validate.problems(rendered[overlay], KUBERNETES_VERSION) == []


def test_validation_fails_on_an_unknown_field_or_kind(rendered: dict[str, list[Obj]]) -> None:
    deployment = copy.deepcopy(find(rendered["dev"], "Deployment", "user-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    found = validate.problems([deployment, unknown], KUBERNETES_VERSION)
    assert len(found) == 2
    assert "livenessprobe" in found[0]
    assert "no schema" in found[1]


def test_the_crd_schemas_reject_what_the_operators_would() -> None:
    """The vendored schemas are strict enough to catch a typo or a wrong type."""
    cluster = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "postgres"},
        "spec": {"instances": 3, "storage": {"size": "1Gi"}},
    }
    schema = CRD_SCHEMAS[("postgresql.cnpg.io/v1", "Cluster")]
    jsonschema.validate(cluster, schema)
    for broken in ({"instance": 3}, {"instances": "three"}, {"instances": 0}):
        spec = {k: v for k, v in cluster["spec"].items() if k != "instances"} | broken
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**cluster, "spec": spec}, schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_overlays_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    namespace = NAMESPACES[overlay]
    assert [o["metadata"]["name"] for o in by_kind(rendered[overlay], "Namespace")] == [namespace]
    stray = [
        o["metadata"]["name"]
        for o in rendered[overlay]
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != namespace
    ]
    assert not stray


def test_stateful_services_are_highly_available_in_production_and_single_in_dev(
    rendered: dict[str, list[Obj]],
) -> None:
    for overlay, instances, sentinel in (("production", 3, True), ("staging", 3, True), ("dev", 1, False)):
        objects = rendered[overlay]
        assert find(objects, "Cluster", "postgres")["spec"]["instances"] == instances, overlay
        assert find(objects, "RabbitmqCluster", "rabbitmq")["spec"]["replicas"] == instances, overlay
        assert find(objects, "RedisReplication", "redis-replication")["spec"]["clusterSize"] == instances, (
            overlay
        )
        assert bool(by_kind(objects, "RedisSentinel")) is sentinel, overlay
    production = find(rendered["production"], "Cluster", "postgres")["spec"]
    assert production["affinity"]["podAntiAffinityType"] == "required"


def test_one_database_per_service_in_the_postgres_cluster(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    cluster = find(objects, "Cluster", "postgres")["spec"]
    databases = {cluster["bootstrap"]["initdb"]["database"]} | {
        d["spec"]["name"] for d in by_kind(objects, "Database")
    }
    names = set()
    for config in ("user-api-config", "order-api-config", "notifier-config", "workers-config"):
        data = find(objects, "ConfigMap", config)["data"]
        names |= {v for k, v in data.items() if k.endswith("_DB_NAME")}
    assert databases == names == {"users", "orders", "notifications"}
    owners = {cluster["bootstrap"]["initdb"]["owner"]} | {
        d["spec"]["owner"] for d in by_kind(objects, "Database")
    }
    assert owners == {"app"}


def test_backups_are_scheduled_where_there_is_object_storage(rendered: dict[str, list[Obj]]) -> None:
    for overlay in ("staging", "production"):
        objects = rendered[overlay]
        backup = find(objects, "Cluster", "postgres")["spec"]["backup"]
        assert backup["barmanObjectStore"]["destinationPath"].startswith("s3://"), overlay
        assert re.fullmatch(r"\d+[dwm]", backup["retentionPolicy"])
        (scheduled,) = by_kind(objects, "ScheduledBackup")
        assert scheduled["spec"]["cluster"]["name"] == "postgres"
    assert not by_kind(rendered["dev"], "ScheduledBackup")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_the_app_image_is_the_release(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for _, pod in pod_specs(rendered[overlay]):
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name, f"{container['name']}: {image} has no tag"
            assert "/" not in tag, f"{container['name']}: {image} has no tag"
            assert tag != "latest", f"{container['name']}: {image}"
            if name == APP_IMAGE:
                assert tag == ("dev" if overlay == "dev" else "set-by-deploy-sh")
    for obj in rendered[overlay]:
        for field in ("image", "imageName"):
            image = obj.get("spec", {}).get(field) or obj.get("spec", {}).get("kubernetesConfig", {}).get(
                field
            )
            if isinstance(image, str):
                assert ":" in image, f"{obj['kind']}: {image}"
                assert not image.endswith(":latest"), f"{obj['kind']}: {image}"


def test_prometheus_rules_come_from_the_promtool_tested_files(rendered: dict[str, list[Obj]]) -> None:
    rules = by_kind(rendered["production"], "PrometheusRule")
    expected = {}
    for path in (ROOT / "monitoring/prometheus/rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            expected[group["name"]] = group["rules"]
    got = {group["name"]: group["rules"] for rule in rules for group in rule["spec"]["groups"]}
    assert got == expected


def test_templates_configmaps_hold_every_template_file(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    for folder in ("email", "sms", "push", "samples"):
        data = find(objects, "ConfigMap", f"templates-{folder}")["data"]
        files = {p.name: p.read_text() for p in (ROOT / "templates" / folder).iterdir() if p.is_file()}
        assert data == files, folder


def test_secret_files_are_git_ignored_and_each_has_an_example() -> None:
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        sources = []
        for generator in kustomization.get("secretGenerator", []) + kustomization.get(
            "configMapGenerator", []
        ):
            sources += generator.get("envs", [])
            sources += [f.split("=", 1)[-1] for f in generator.get("files", [])]
        secret_files = [s for s in sources if s.startswith("secrets/")]
        assert secret_files, overlay
        for relative in secret_files:
            path = Path("deploy/k8s/overlays") / overlay / relative
            assert (ROOT / f"{path}.example").is_file(), f"{path}.example is missing"
            ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
            assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_the_requests_per_second_component_renders_and_validates(k8s_tree: Path) -> None:
    overlay = k8s_tree / "overlays" / "production-rps"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../production]\ncomponents: [../../components/requests-per-second]\n"
    )
    objects = render(k8s_tree, "production-rps")
    assert validate.problems(objects, KUBERNETES_VERSION) == []
    for name in ("user-api", "order-api", "notifier"):
        metrics = find(objects, "HorizontalPodAutoscaler", name)["spec"]["metrics"]
        assert [m["type"] for m in metrics] == ["Resource", "Pods"], name
    assert [m["type"] for m in find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]["metrics"]] == [
        "Resource"
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_secret_examples_agree_with_what_reads_them(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """The role CloudNativePG creates is the owner of the databases; KEDA's URL is the app user's."""
    objects = rendered[overlay]

    def secret(name: str) -> dict[str, str]:
        data = find(objects, "Secret", name)["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    postgres = secret("postgres-app")
    assert find(objects, "Secret", "postgres-app")["type"] == "kubernetes.io/basic-auth"
    assert (
        postgres["username"] == find(objects, "Cluster", "postgres")["spec"]["bootstrap"]["initdb"]["owner"]
    )
    rabbitmq = secret("rabbitmq-app")
    url = urlsplit(rabbitmq["amqp-url"])
    namespace = NAMESPACES[overlay]
    assert (url.username, url.password) == (rabbitmq["username"], rabbitmq["password"])
    assert (url.hostname, url.port) == (f"rabbitmq.{namespace}.svc", 5672)
    vhost = find(objects, "Permission", "app")["spec"]["vhost"]
    assert unquote(url.path[1:]) == vhost
    assert find(objects, "User", "app")["spec"]["importCredentialsSecret"]["name"] == "rabbitmq-app"
