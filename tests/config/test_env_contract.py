"""What the compose files, scripts and .env.example say about the environment matches what the
code reads: variable names are Settings fields, values parse, ports and names agree everywhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from common.settings import load_settings
from notifier.settings import NotifierSettings
from order_api.settings import Settings as OrderSettings
from tests.config.compose import BASE, COMBINATIONS, OVERRIDES, interpolated_variables, merged
from tests.config.conftest import ROOT
from user_api.settings import Settings as UserSettings
from workers.settings import WorkerSettings

# compose service -> (the settings it reads, its port variable, its port)
SERVICES: dict[str, tuple[type[BaseSettings], str, int]] = {
    "user-service": (UserSettings, "USER_API_PORT", 8081),
    "order-service": (OrderSettings, "ORDER_API_PORT", 8082),
    "notification-service": (NotifierSettings, "NOTIFIER_PORT", 8083),
    "workers": (WorkerSettings, "WORKERS_METRICS_PORT", 9191),
}
# Variables a service's environment may hold beyond its Settings, and the file that reads each.
READ_ELSEWHERE = {"PROMETHEUS_MULTIPROC_DIR": ROOT / "workers/__main__.py"}
GATEWAY_UPSTREAMS = {
    "GATEWAY_USER_API_UPSTREAMS": "user-service",
    "GATEWAY_ORDER_API_UPSTREAMS": "order-service",
    "GATEWAY_NOTIFIER_UPSTREAMS": "notification-service",
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    return {name.upper() for name in settings.model_fields}


def environment(config: dict[str, Any], service: str) -> dict[str, str]:
    return {k: str(v) for k, v in config["services"][service].get("environment", {}).items()}


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
@pytest.mark.parametrize("service", list(SERVICES))
def test_every_variable_given_to_a_service_is_one_it_reads(env_name: str, service: str) -> None:
    settings, _, _ = SERVICES[service]
    given = set(environment(merged(env_name), service))
    unknown = given - env_names(settings) - READ_ELSEWHERE.keys()
    assert not unknown, f"{service} is given {sorted(unknown)}, which {settings.__module__} does not read"
    for name in given & READ_ELSEWHERE.keys():
        assert name in READ_ELSEWHERE[name].read_text()


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
@pytest.mark.parametrize("service", list(SERVICES))
def test_the_values_given_pass_the_services_own_validation(
    env_name: str, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, port_variable, port = SERVICES[service]
    env = environment(merged(env_name), service)
    # Only what compose gives the container: nothing from the test's own environment.
    for name in env_names(settings):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    loaded = load_settings(settings)  # production checks (no example secrets) included
    assert getattr(loaded, port_variable.lower()) == port
    assert loaded.http_host == "0.0.0.0"
    expected_env = {"development": "development", "staging": "staging", "production": "production"}[env_name]
    assert loaded.app_env == expected_env


@pytest.mark.parametrize("service", list(SERVICES))
def test_port_agrees_with_health_check_and_publishing(service: str) -> None:
    _, port_variable, port = SERVICES[service]
    config = merged("development")["services"][service]
    assert config["environment"][port_variable] == str(port)
    assert f"http://127.0.0.1:{port}/" in " ".join(config["healthcheck"]["test"])
    assert all(p["target"] == port for p in config.get("ports", []))


def test_gateway_upstreams_name_the_services_and_their_ports() -> None:
    env = environment(merged("development"), "gateway-config")
    for variable, service in GATEWAY_UPSTREAMS.items():
        _, _, port = SERVICES[service]
        assert env[variable] == f"{service}:{port}"


def test_prometheus_scrapes_the_ports_the_services_listen_on() -> None:
    prometheus = yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    discovered = {
        name: sd["port"]
        for job in prometheus["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    for service, (_, _, port) in SERVICES.items():
        assert discovered.get(service) == port, service
    services = merged("development")["services"]
    static = {
        target
        for job in prometheus["scrape_configs"]
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }
    for target in static:
        host = target.split(":")[0]
        assert host == "localhost" or host in services, f"prometheus scrapes {target}: no such service"


def test_services_find_each_other_by_compose_name() -> None:
    config = merged("development")
    for service in ("order-service", "notification-service"):
        url = urlsplit(environment(config, service)["USER_SERVICE_URL"])
        assert (url.hostname, url.port) == ("user-service", SERVICES["user-service"][2])
    for service in SERVICES:
        env = environment(config, service)
        assert env["DB_HOST"] == "postgres"
        assert env["RABBITMQ_HOST"] == "rabbitmq"
        if "REDIS_HOST" in env:
            assert env["REDIS_HOST"] == "redis"


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
def test_credentials_agree_between_servers_and_clients(env_name: str) -> None:
    config = merged(env_name)
    postgres = environment(config, "postgres")
    rabbitmq = environment(config, "rabbitmq")
    redis = environment(config, "redis")
    for service in SERVICES:
        env = environment(config, service)
        assert (env["DB_USERNAME"], env["DB_PASSWORD"]) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )
        assert (env["RABBITMQ_USERNAME"], env["RABBITMQ_PASSWORD"]) == (
            rabbitmq["RABBITMQ_DEFAULT_USER"],
            rabbitmq["RABBITMQ_DEFAULT_PASS"],
        )
        assert env.get("RABBITMQ_VHOST", "/") == rabbitmq["RABBITMQ_DEFAULT_VHOST"]
        if "REDIS_PASSWORD" in env:
            assert env["REDIS_PASSWORD"] == redis["REDIS_PASSWORD"]
    for variable in ("USER_DB_NAME", "ORDER_DB_NAME", "NOTIFICATION_DB_NAME"):
        readers = [s for s in SERVICES if variable in environment(config, s)]
        assert readers, variable
        assert {environment(config, s)[variable] for s in readers} == {postgres[variable]}, variable
    exporter = environment(config, "postgres-exporter")
    assert exporter["DATA_SOURCE_PASS"] == postgres["POSTGRES_PASSWORD"]
    assert environment(config, "redis-exporter")["REDIS_PASSWORD"] == redis["REDIS_PASSWORD"]


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
def test_user_api_trusts_exactly_the_gateway(env_name: str) -> None:
    config = merged(env_name)
    gateway_ip = config["services"]["gateway"]["networks"]["backend"]["ipv4_address"]
    assert environment(config, "user-service")["TRUSTED_PROXIES"] == gateway_ip
    subnet = config["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    assert gateway_ip.rsplit(".", 1)[0] == subnet.split("/")[0].rsplit(".", 1)[0]


# --- .env.example --------------------------------------------------------------------------------


def env_example_variables() -> dict[str, str]:
    variables = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match:
            variables[match.group(1)] = line
    return variables


def names_read_by_code() -> set[str]:
    names: set[str] = set()
    for settings in (UserSettings, OrderSettings, NotifierSettings, WorkerSettings):
        names |= env_names(settings)
    scripts = [*ROOT.glob("scripts/*.sh"), ROOT / ".ci/run"]
    for script in scripts:
        names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script.read_text()))
    for source in [*ROOT.glob("*/*.py"), *ROOT.glob("*/*/*.py")]:
        if source.parts[len(ROOT.parts)] in (".venv", "tests"):
            continue
        text = source.read_text()
        names |= set(re.findall(r"environ(?:\.get)?[\[(]\s*['\"]([A-Z][A-Z0-9_]*)['\"]", text))
        names |= set(re.findall(r"_env_(?:int|bool)\(\s*env,\s*['\"]([A-Z][A-Z0-9_]*)['\"]", text))
        names |= set(re.findall(r"env\.get\(\s*['\"]([A-Z][A-Z0-9_]*)['\"]", text))
    for compose in (BASE, *OVERRIDES.values()):
        names |= interpolated_variables(compose)
    return names


def test_every_variable_in_env_example_is_read_somewhere() -> None:
    unread = set(env_example_variables()) - names_read_by_code()
    assert not unread, f".env.example lists {sorted(unread)}, which no Settings class or script reads"


def test_every_variable_the_deployment_reads_is_documented() -> None:
    """Everything compose interpolates and the gateway reads is in .env.example or docs/deployment.md."""
    documented = set(env_example_variables()) | set(
        re.findall(r"`([A-Z][A-Z0-9_]*)`", (ROOT / "docs/deployment.md").read_text())
    )
    render_py = "".join(p.read_text() for p in sorted((ROOT / "gateway_conf").glob("*.py")))
    gateway_variables = set(re.findall(r"['\"]((?:GATEWAY|CORS)_[A-Z0-9_]+)['\"]", render_py))
    gateway_variables |= {f"GATEWAY_{s.upper()}_UPSTREAMS" for s in ("user_api", "order_api", "notifier")}
    needed: set[str] = set(gateway_variables)
    for compose in (BASE, *OVERRIDES.values()):
        needed |= interpolated_variables(compose)
    undocumented = needed - documented
    assert not undocumented, f"not documented in .env.example or docs/deployment.md: {sorted(undocumented)}"


def test_env_example_is_loadable_by_every_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A copied .env.example runs in development: its values parse in every Settings class."""
    values = {}
    for name, line in env_example_variables().items():
        value = line.split("=", 1)[1].split("#", 1)[0].strip()
        values[name] = value
    for settings in (UserSettings, OrderSettings, NotifierSettings, WorkerSettings):
        for name in env_names(settings):
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            if name in env_names(settings):
                monkeypatch.setenv(name, value)
        assert load_settings(settings).app_env == "development"
