"""The compose files: valid alone and in every combination deploy.sh uses, and shaped as promised
(health checks and ordering in development; limits, replicas, restarts, nothing published and
secrets required in staging and production)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from jsonschema import Draft7Validator

from tests.config.compose import (
    APP_SERVICES,
    BASE,
    COMBINATIONS,
    DEPLOY_ENV,
    ONE_SHOTS,
    OVERRIDES,
    merged,
    required_variables,
    run_config,
)
from tests.config.conftest import ROOT, require_tool

DATA_VOLUMES = {
    "postgres": "/var/lib/postgresql/data",
    "redis": "/data",
    "rabbitmq": "/var/lib/rabbitmq",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
    "elasticsearch": "/usr/share/elasticsearch/data",
}
# Long-running services without a health check, and why.
NO_HEALTHCHECK = {
    "nginx-exporter": "its image is FROM scratch: no shell, no wget to probe with",
    "otel-collector": "its image is FROM scratch too; nothing waits for it (spans are dropped)",
}
APIS = ("user-service", "order-service", "notification-service")


@pytest.fixture(scope="module", params=list(COMBINATIONS))
def combination(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, merged(request.param)


# --- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
def test_docker_compose_config_accepts_every_combination(env_name: str) -> None:
    env = {} if env_name == "development" else DEPLOY_ENV
    result = run_config(COMBINATIONS[env_name], env, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning either (unset variables, obsolete keys)


def test_development_needs_no_environment_at_all() -> None:
    result = run_config([BASE], {}, "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env_name", "variable"),
    [
        (env_name, variable)
        for env_name, path in OVERRIDES.items()
        for variable in sorted(required_variables(path))
    ],
)
def test_a_deployment_without_a_required_variable_is_refused(env_name: str, variable: str) -> None:
    env = {name: value for name, value in DEPLOY_ENV.items() if name != variable}
    result = run_config(COMBINATIONS[env_name], env, "-q")
    assert result.returncode != 0
    assert variable in result.stderr


def test_check_jsonschema_accepts_the_base_file() -> None:
    tool = require_tool("check-jsonschema")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(BASE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_jsonschema_accepts_every_merged_combination(
    combination: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    tool = require_tool("check-jsonschema")
    name, config = combination
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class _ComposeTagLoader(yaml.SafeLoader):
    """Compose's merge tags (!reset, !override) read as their plain values."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!reset", "!override"):
    _ComposeTagLoader.add_constructor(_tag, _plain)


@pytest.mark.parametrize("env_name", list(OVERRIDES))
def test_override_files_follow_the_compose_spec(env_name: str) -> None:
    # check-jsonschema's YAML reader stops at !reset, so the same vendored schema is applied here.
    document = yaml.load(OVERRIDES[env_name].read_text(), Loader=_ComposeTagLoader)  # noqa: S506
    errors = sorted(Draft7Validator(get_builtin_schema("vendor.compose-spec")).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_bind_mounted_files_exist_in_the_repository(combination: tuple[str, dict[str, Any]]) -> None:
    _, config = combination
    for name, service in config["services"].items():
        for mount in service.get("volumes", []):
            source = mount.get("source", "")
            if mount["type"] == "bind" and source.startswith(str(ROOT)):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"


# --- development -------------------------------------------------------------------------------


def test_every_long_running_service_has_a_health_check() -> None:
    services = merged("development")["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name in ONE_SHOTS:
            assert check.get("disable") is True, f"{name} runs once: the image's check would mislead"
        elif name in NO_HEALTHCHECK:
            assert not check.get("test")
        else:
            assert check.get("test"), f"{name} has no health check"
            assert not check.get("disable")


def test_dependencies_wait_for_health_or_completion() -> None:
    services = merged("development")["services"]
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            condition = how["condition"]
            if dependency in ONE_SHOTS:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}"
            elif dependency in NO_HEALTHCHECK:
                assert condition == "service_started", f"{name} -> {dependency}"
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}"
                assert services[dependency]["healthcheck"].get("test"), f"{dependency} cannot become healthy"


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
def test_every_long_running_service_is_restarted_and_no_one_shot_is(env_name: str) -> None:
    # The compose side of supervision: a container whose process exits is started again.
    services = merged(env_name)["services"]
    one_shots = ONE_SHOTS | {
        dependency
        for service in services.values()
        for dependency, how in service.get("depends_on", {}).items()
        if how["condition"] == "service_completed_successfully"
    }
    for name, service in services.items():
        if name in one_shots:
            assert service.get("restart") in (None, "no"), f"{name} would be run again after it is done"
        else:
            assert service.get("restart") == "unless-stopped", f"{name} is not restarted when it exits"


def test_state_lives_in_named_volumes() -> None:
    config = merged("development")
    for name, target in DATA_VOLUMES.items():
        mounts = {m["target"]: m for m in config["services"][name]["volumes"]}
        assert mounts[target]["type"] == "volume", f"{name}: {target} is not a named volume"
        assert mounts[target]["source"] in config["volumes"]


def test_the_gateway_waits_for_its_rendered_configuration_and_the_apis() -> None:
    gateway = merged("development")["services"]["gateway"]
    assert set(gateway["depends_on"]) == {"gateway-config", *APIS}
    assert gateway["command"][:3] == ["nginx", "-c", "/etc/gateway/conf/nginx.conf"]


def test_development_publishes_only_the_gateway_beyond_loopback() -> None:
    for name, service in merged("development")["services"].items():
        for port in service.get("ports", []):
            if name == "gateway":
                assert port["target"] in (80, 443)
            else:
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} on every address"


# --- staging and production --------------------------------------------------------------------


@pytest.mark.parametrize("env_name", list(OVERRIDES))
def test_nothing_but_the_gateway_and_operator_uis_is_published(env_name: str) -> None:
    services = merged(env_name)["services"]
    loopback_uis = {
        "rabbitmq": 15672,
        "prometheus": 9090,
        "grafana": 3000,
        "kibana": 5601,
        "alertmanager": 9093,
    }
    if env_name == "staging":
        loopback_uis |= {"mailpit": 8025, "fake-provider": 8090}
    for name, service in services.items():
        ports = service.get("ports", [])
        if name == "gateway":
            assert sorted(p["target"] for p in ports) == [80, 443]
        elif name in loopback_uis:
            assert [(p.get("host_ip"), p["target"]) for p in ports] == [("127.0.0.1", loopback_uis[name])], (
                name
            )
        else:
            assert ports == [], f"{name} is published in {env_name}: {ports}"


@pytest.mark.parametrize("env_name", list(OVERRIDES))
def test_apis_and_workers_run_replicated_with_limits_and_restarts(env_name: str) -> None:
    services = merged(env_name)["services"]
    for name in (*APIS, "workers"):
        assert services[name]["deploy"]["replicas"] >= 2, name
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service.get("restart") in (None, "no"), f"{name} would be restarted after it is done"
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"), name


@pytest.mark.parametrize(("env_name", "app_env"), [("staging", "staging"), ("production", "production")])
def test_services_run_the_given_image_in_their_environment(env_name: str, app_env: str) -> None:
    services = merged(env_name)["services"]
    for name in APP_SERVICES & services.keys():
        assert services[name]["image"] == f"microservices-app:{DEPLOY_ENV['IMAGE_TAG']}", name
        if name != "fake-provider":  # a stand-in for a third party: it reads no settings
            assert services[name]["environment"]["APP_ENV"] == app_env, name


def test_production_runs_no_development_stand_ins() -> None:
    services = merged("production")["services"]
    assert "mailpit" not in services
    assert "fake-provider" not in services
    assert "development" in run_config(COMBINATIONS["production"], DEPLOY_ENV, "--profiles").stdout.split()
    assert services["workers"]["environment"]["SMTP_HOST"] == DEPLOY_ENV["SMTP_HOST"]


def test_staging_mail_never_leaves_the_mail_catcher() -> None:
    workers = merged("staging")["services"]["workers"]["environment"]
    assert workers["SMTP_HOST"] == "mailpit"
    assert workers["SMS_PROVIDER_URL"] == workers["PUSH_PROVIDER_URL"] == "http://fake-provider:8090"


@pytest.mark.parametrize("env_name", list(OVERRIDES))
def test_secrets_come_from_the_deploying_environment(env_name: str) -> None:
    config = merged(env_name)
    services = config["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == DEPLOY_ENV["DB_PASSWORD"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == DEPLOY_ENV["REDIS_PASSWORD"]
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] == DEPLOY_ENV["RABBITMQ_PASSWORD"]
    assert (
        services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        == DEPLOY_ENV["GRAFANA_ADMIN_PASSWORD"]
    )
    assert config["secrets"]["jwt_private_key"]["file"] == DEPLOY_ENV["JWT_PRIVATE_KEY_FILE"]
    user = services["user-service"]
    assert {s["source"] for s in user["secrets"]} == {"jwt_private_key", "jwt_public_key"}
    assert user["environment"]["JWT_PRIVATE_KEY_FILE"] == "/run/secrets/jwt_private_key"
    for name in ("order-service", "notification-service"):
        assert {s["source"] for s in services[name]["secrets"]} == {"jwt_public_key"}, name
        assert services[name]["environment"]["JWT_PUBLIC_KEY_FILE"] == "/run/secrets/jwt_public_key"
    for name in ("gateway", "gateway-config"):
        tls = next(m for m in services[name]["volumes"] if m["target"] == "/etc/gateway/tls")
        assert (tls["type"], tls["source"], tls.get("read_only")) == (
            "bind",
            DEPLOY_ENV["GATEWAY_TLS_DIR"],
            True,
        )
