"""Grafana dashboards and provisioning, checked without Grafana: structure, datasource, that every
query parses (promtool), and that every metric a panel reads is one our code or an exporter emits.
tests/monitoring/test_dashboards_live.py runs the same queries against a live Prometheus."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.helpers import (
    GRAFANA_VARIABLES,
    PENDING_METRICS,
    PROVISIONING_DIR,
    code_metric_names,
    exporter_metric_names,
    load_dashboards,
    metric_names,
    panel_queries,
    panels,
)

DASHBOARDS = load_dashboards()
QUERIES = panel_queries()


def provisioned_datasource() -> dict[str, Any]:
    config = yaml.safe_load((PROVISIONING_DIR / "datasources" / "prometheus.yml").read_text())
    (datasource,) = config["datasources"]
    return dict(datasource)


def exprs_of(dashboard: str) -> list[str]:
    return [query.expr for query in QUERIES if query.dashboard == dashboard]


def test_the_three_dashboards_exist() -> None:
    assert set(DASHBOARDS) == {"overview", "order-flow", "infrastructure"}


def test_dashboard_uids_and_titles_are_unique() -> None:
    uids = [dashboard["uid"] for dashboard in DASHBOARDS.values()]
    titles = [dashboard["title"] for dashboard in DASHBOARDS.values()]
    assert (len(set(uids)), len(set(titles))) == (len(DASHBOARDS), len(DASHBOARDS))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_are_unique(name: str) -> None:
    ids = [panel["id"] for panel in DASHBOARDS[name]["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_fit_the_24_column_grid(name: str) -> None:
    outside = [
        panel["title"]
        for panel in DASHBOARDS[name]["panels"]
        if not (panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24)
    ]
    assert outside == []


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_has_a_query(name: str) -> None:
    empty = [panel["title"] for panel in panels(DASHBOARDS[name]) if not panel.get("targets")]
    assert empty == []


def variables(name: str) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in DASHBOARDS[name]["templating"]["list"]}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_and_query_uses_the_datasource_variable(name: str) -> None:
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(DASHBOARDS[name]):
        assert panel["datasource"] == expected, panel["title"]
        assert all(target["datasource"] == expected for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_variable_defaults_to_the_provisioned_prometheus(name: str) -> None:
    datasource = variables(name)["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert datasource["current"]["value"] == provisioned_datasource()["uid"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_service_and_instance_variables_chain_and_default_to_all(name: str) -> None:
    service, instance = variables(name)["service"], variables(name)["instance"]
    assert service["query"]["query"] == "label_values(up, job)"
    assert instance["query"]["query"] == 'label_values(up{job=~"$service"}, instance)'
    for variable in (service, instance):
        assert (variable["multi"], variable["includeAll"], variable["allValue"]) == (True, True, ".*")
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("query", QUERIES, ids=[query.test_id for query in QUERIES])
def test_queries_use_only_known_variables(query: Any) -> None:
    # Other variables would need a value to run the query here and in the live test.
    assert set(re.findall(r"\$\w+", query.expr)) <= set(GRAFANA_VARIABLES)


@pytest.mark.parametrize("query", QUERIES, ids=[query.test_id for query in QUERIES])
def test_every_series_a_query_selects_follows_service_and_instance(query: Any) -> None:
    # ALERTS is Prometheus' own series of alerts: its labels are the alerts', not a target's.
    selectors = re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", query.expr)
    unfiltered = [
        name
        for name, matchers in selectors
        if name != "ALERTS"
        and not {'job=~"$service"', 'instance=~"$instance"'} <= set(re.split(r",\s*", matchers))
    ]
    assert selectors
    assert unfiltered == []
    assert metric_names(query.promql) == {name for name, _ in selectors}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboards_link_the_runbooks_and_alert_panels_their_section(name: str) -> None:
    from tests.monitoring.test_alert_rules import runbook_sections

    base = variables(name)["runbook_base_url"]
    assert (base["type"], base["hide"]) == ("textbox", 2)
    assert {"title": "Runbooks", "url": "${runbook_base_url}"}.items() <= next(
        link for link in DASHBOARDS[name]["links"] if link["title"] == "Runbooks"
    ).items()
    anchors = [
        link["url"].partition("#")[2]
        for panel in panels(DASHBOARDS[name])
        for link in panel.get("links", [])
        if link["url"].startswith("${runbook_base_url}#")
    ]
    assert anchors
    assert set(anchors) - set(runbook_sections()) == set()


def test_every_query_parses(promtool: str, tmp_path: Path) -> None:
    # promtool parses a recording rule's expression exactly as Prometheus parses a query.
    rules = [
        {"record": f"dashboard:query_{index}", "expr": query.promql} for index, query in enumerate(QUERIES)
    ]
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_a_panel_reads_is_emitted_somewhere() -> None:
    known = code_metric_names() | exporter_metric_names() | set(PENDING_METRICS)
    unknown = {
        name: query.test_id for query in QUERIES for name in metric_names(query.promql) if name not in known
    }
    assert unknown == {}


def test_pending_metrics_are_not_emitted_yet() -> None:
    # Once the code emits one, it is no longer pending: take it off the list.
    assert set(PENDING_METRICS) & code_metric_names() == set()


def test_metric_name_extraction_ignores_functions_labels_and_keywords() -> None:
    expr = (
        '(sum by (service) (rate(http_requests_total{status=~"5..", route!~"/metrics"}[5m])) or '
        "vector(0)) / on (service) group_left max(up) > bool 0.5e3"
    )
    assert metric_names(expr) == {"http_requests_total", "up"}


def test_overview_shows_rate_errors_and_p95_p99_per_service() -> None:
    exprs = " ".join(exprs_of("overview"))
    needles = ["http_requests_total", 'status=~"5.."', "histogram_quantile(0.95", "histogram_quantile(0.99"]
    assert [needle for needle in needles if needle not in exprs] == []
    assert "sum by (service" in exprs


def test_flow_dashboard_follows_orders_outbox_queues_and_dead_letters() -> None:
    used = {name for expr in exprs_of("order-flow") for name in metric_names(expr)}
    expected = {"outbox_events_published_total", "order_status_transitions_total"}
    expected |= {"notification_deliveries_total", "outbox_backlog_events", "outbox_oldest_event_age_seconds"}
    expected |= {"rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_messages"}
    expected |= {"dramatiq_messages_total"}
    assert expected <= used
    assert any('queue=~".+[.]XQ"' in expr for expr in exprs_of("order-flow"))


def test_infrastructure_dashboard_covers_rabbitmq_postgresql_and_redis() -> None:
    used = {name for expr in exprs_of("infrastructure") for name in metric_names(expr)}
    assert {name.split("_")[0] for name in used} >= {"rabbitmq", "pg", "redis", "nginx"}


def test_datasource_provisioning_points_at_prometheus() -> None:
    datasource = provisioned_datasource()
    assert (datasource["type"], datasource["uid"], datasource["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )


def test_dashboard_provider_loads_files_from_one_folder() -> None:
    config = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "microservices.yml").read_text())
    (provider,) = config["providers"]
    assert (provider["type"], provider["options"]["path"]) == ("file", "/var/lib/grafana/dashboards")
