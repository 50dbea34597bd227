"""The tracing path in compose, checked statically: the services send OTLP to the collector's
receiver, the collector's pipeline ends at Jaeger, Grafana's data source reads that Jaeger, and
the configuration files are the ones mounted."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.config.compose import COMBINATIONS, merged
from tests.config.conftest import ROOT

COLLECTOR_CONFIG = ROOT / "monitoring/otel-collector.yml"
JAEGER_DATASOURCE = ROOT / "monitoring/grafana/provisioning/datasources/jaeger.yml"
TRACED = ("user-service", "order-service", "notification-service", "workers")


def collector() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    return config


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.mark.parametrize("env_name", list(COMBINATIONS))
def test_every_service_exports_to_the_collectors_otlp_http_receiver(env_name: str) -> None:
    services = merged(env_name)["services"]
    receiver = collector()["receivers"]["otlp"]["protocols"]["http"]
    for name in TRACED:
        env = services[name]["environment"]
        assert env["OTEL_TRACES_EXPORTER"] == "otlp", name
        url = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        wanted = ("http", "otel-collector", port_of(receiver["endpoint"]))
        assert (url.scheme, url.hostname, url.port) == wanted, name
        assert 0 <= float(env["OTEL_TRACES_SAMPLER_ARG"]) <= 1


def test_the_collector_runs_the_mounted_configuration() -> None:
    service = merged("development")["services"]["otel-collector"]
    [config_flag] = [arg for arg in service["command"] if arg.startswith("--config=")]
    mounts = {m["target"]: m["source"] for m in service["volumes"]}
    assert mounts[config_flag.removeprefix("--config=")] == str(COLLECTOR_CONFIG)


def test_every_pipeline_component_is_defined_and_traces_end_at_jaeger() -> None:
    config = collector()
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{kind}: {component} is not defined"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    # The memory limiter must come first: it refuses data before anything else holds it.
    assert config["service"]["pipelines"]["traces"]["processors"][0] == "memory_limiter"
    [exporter] = config["service"]["pipelines"]["traces"]["exporters"]
    host, port = config["exporters"][exporter]["endpoint"].rsplit(":", 1)
    services = merged("development")["services"]
    assert host == "jaeger"
    assert "jaeger" in services
    assert port == "4317"  # Jaeger's OTLP/gRPC receiver
    assert services["otel-collector"]["depends_on"]["jaeger"]["condition"] == "service_healthy"


def test_grafana_reads_traces_from_the_jaeger_service() -> None:
    (datasource,) = yaml.safe_load(JAEGER_DATASOURCE.read_text())["datasources"]
    assert datasource["type"] == "jaeger"
    url = urlsplit(datasource["url"])
    services = merged("development")["services"]
    assert url.hostname == "jaeger"
    assert [p["target"] for p in services["jaeger"]["ports"]] == [url.port]  # the query UI/API
    grafana_mounts = {m["target"]: m["source"] for m in services["grafana"]["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == str(JAEGER_DATASOURCE.parents[1])


def test_nothing_waits_for_the_collector() -> None:
    # A collector that is down costs spans, never a request: no service depends on it.
    for name, service in merged("development")["services"].items():
        assert "otel-collector" not in service.get("depends_on", {}), name
