"""The ELK pieces (compose only, nothing of it runs here): the index template types the ECS fields
the services really write (through Elasticsearch's built-in ecs@mappings, plus our own non-ECS
fields), an ILM policy deletes old indices, the Kibana objects parse and hang together, Filebeat
feeds Logstash. The Logstash pipeline's syntax is reviewed by reading; Logstash is not
installable offline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.monitoring.helpers import MONITORING, ROOT

ELK = MONITORING / "elk"
TEMPLATE_PATH = ELK / "elasticsearch" / "microservices-logs.json"
TEMPLATE = json.loads(TEMPLATE_PATH.read_text())
ILM_PATH = ELK / "elasticsearch" / "microservices-logs-ilm.json"
ILM = json.loads(ILM_PATH.read_text())
PIPELINE = (ELK / "logstash" / "pipeline" / "microservices.conf").read_text()
SAVED_OBJECTS_LINES = (ELK / "kibana" / "saved-objects.ndjson").read_text().splitlines()
SAVED_OBJECTS = [json.loads(line) for line in SAVED_OBJECTS_LINES if line.strip()]
OBJECTS = {(obj["type"], obj["id"]): obj for obj in SAVED_OBJECTS}

# A real access-log line and an error line, written by common.logging in a process of their own
# (configure_logging rewires the process's logging).
LOG_SCRIPT = """
import structlog
from common.logging import configure_logging
configure_logging("order_api")
structlog.contextvars.bind_contextvars(**{"trace.id": "4bf92f3577b34da6a3ce929d0e0e4736"})
log = structlog.get_logger("access")
log.info("request_finished", **{"http.response.status_code": 201, "event.duration": 1500000,
         "http.route": "/api/orders", "client.ip": "127.0.0.1", "http.request.method": "POST",
         "url.path": "/api/orders"})
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("request_failed")
"""


def explicit_mapping(path: str) -> dict[str, Any] | None:
    node: dict[str, Any] = {"properties": TEMPLATE["template"]["mappings"]["properties"]}
    for part in path.split(".") if path != "@timestamp" else [path]:
        properties = node.get("properties", {})
        if part not in properties:
            return None
        node = properties[part]
    return node


def ecs_dynamic_type(path: str, value: Any) -> str:
    """The type Elasticsearch 8.17's built-in ecs@mappings gives a new field, for the rules our
    fields meet (its dynamic templates, first match wins; the rest is Elasticsearch's default
    dynamic mapping: JSON integers long, other numbers float)."""
    leaf = path.rsplit(".", 1)[-1]
    if path == "@timestamp":
        return "date"
    if path == "message" or path.endswith(".message"):
        return "match_only_text"
    if isinstance(value, str) and (path == "ip" or path.endswith((".ip", "_ip"))):
        return "ip"
    if path.endswith("url.path"):
        return "wildcard"
    if leaf.endswith("stack_trace"):
        return "wildcard"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    return "keyword"


# A sample value of the JSON type each field arrives with (common/logging.py, the gateway).
SAMPLE_VALUES: dict[str, Any] = {"http.response.status_code": 201, "event.duration": 1500000}


def mapping_of(path: str, value: Any = "text") -> dict[str, Any]:
    """The mapping a field gets: ours where the template names it, ecs@mappings' otherwise."""
    explicit = explicit_mapping(path)
    if explicit is not None:
        return explicit
    return {"type": ecs_dynamic_type(path, SAMPLE_VALUES.get(path, value))}


def leaves(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(leaves(value, path + "."))
        else:
            flat[path] = value
    return flat


@pytest.fixture(scope="module")
def service_log_lines() -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, "-c", LOG_SCRIPT], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("field", "types"),
    [
        ("@timestamp", {"date"}),
        ("message", {"text", "match_only_text"}),
        ("log.level", {"keyword"}),
        ("service.name", {"keyword"}),
        ("trace.id", {"keyword"}),
        ("http.request.method", {"keyword"}),
        ("http.response.status_code", {"long", "integer", "short"}),
        ("http.route", {"keyword"}),
        ("url.path", {"keyword", "wildcard"}),
        ("event.duration", {"long"}),
        ("error.message", {"text", "match_only_text"}),
        ("error.stack_trace", {"text", "wildcard", "keyword"}),
        ("client.ip", {"ip"}),
    ],
)
def test_index_template_maps_the_ecs_field(field: str, types: set[str]) -> None:
    assert mapping_of(field)["type"] in types


def test_ecs_fields_come_from_the_built_in_ecs_mappings() -> None:
    # No hand-kept copy of ECS: only fields ECS does not define are mapped explicitly.
    assert TEMPLATE["composed_of"] == ["ecs@mappings"]
    ours = set(TEMPLATE["template"]["mappings"]["properties"])
    assert ours == {"gateway", "event_id", "event_type", "notification_id", "channel", "attempt"}
    assert "dynamic_templates" not in TEMPLATE["template"]["mappings"]


def test_indices_follow_an_ilm_policy_that_deletes_them() -> None:
    assert TEMPLATE["template"]["settings"]["index.lifecycle.name"] == "microservices-logs"
    phases = ILM["policy"]["phases"]
    assert list(phases) == ["hot", "delete"]
    assert phases["delete"]["actions"] == {"delete": {}}
    assert phases["delete"]["min_age"] == "{{LOG_RETENTION}}"


def test_compose_installs_the_policy_with_the_retention_before_logstash_writes() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    setup = services["elasticsearch-setup"]
    command = " ".join(setup["entrypoint"])
    assert "/_ilm/policy/microservices-logs" in command
    assert "s/{{LOG_RETENTION}}/$$LOG_RETENTION/" in command
    assert setup["environment"]["LOG_RETENTION"] == "${LOG_RETENTION:-14d}"
    assert "./monitoring/elk/elasticsearch/microservices-logs-ilm.json:/setup/ilm.json:ro" in setup["volumes"]
    assert (
        services["logstash"]["depends_on"]["elasticsearch-setup"]["condition"]
        == "service_completed_successfully"
    )
    # What the setup's sed makes of it is a valid policy.
    policy = json.loads(ILM_PATH.read_text().replace("{{LOG_RETENTION}}", "14d"))
    assert policy["policy"]["phases"]["delete"]["min_age"] == "14d"


def test_template_applies_to_the_index_logstash_writes() -> None:
    (pattern,) = TEMPLATE["index_patterns"]
    index = re.findall(r'index\s*=>\s*"([^"]+)"', PIPELINE)
    assert [name for name in index if name.startswith(pattern.rstrip("*"))] == index != []


def test_logstash_installs_this_template() -> None:
    templates = re.findall(r'\btemplate\s*=>\s*"([^"]+)"', PIPELINE)
    assert [path.rsplit("/", 1)[-1] for path in templates] == [TEMPLATE_PATH.name]


def test_every_field_a_service_writes_maps_compatibly(service_log_lines: list[dict[str, Any]]) -> None:
    # The two top-level dotted keys are moved under their objects by the pipeline's rename.
    compatible = {str: {"keyword", "text", "date", "ip", "match_only_text", "wildcard"}, int: {"long"}}
    problems = []
    for line in service_log_lines:
        for field, value in leaves(line).items():
            mapping = mapping_of(field, value)
            if mapping["type"] not in compatible.get(type(value), set()):
                problems.append((field, type(value).__name__, mapping["type"]))
    assert problems == []


def test_every_field_of_the_gateway_access_log_is_mapped() -> None:
    # gateway_conf's log_format gateway_json: "key":"$var" is a string, "key":$var a number.
    nginx_conf = (ROOT / "gateway_conf" / "templates" / "nginx.conf").read_text()
    fields = re.findall(r"'\"([@\w.]+)\":(\"?)\$", nginx_conf)
    assert fields, "no log_format gateway_json in gateway_conf/templates/nginx.conf"
    numeric = {"long", "integer", "short", "float", "double"}
    textual = {"keyword", "ip", "date", "wildcard", "match_only_text"}
    problems = [
        (field, mapping_of(field, "text" if quote else 1)["type"])
        for field, quote in fields
        if mapping_of(field, "text" if quote else 1)["type"] not in (textual if quote else numeric)
    ]
    assert problems == []


def test_services_write_the_fields_kibana_searches_on(service_log_lines: list[dict[str, Any]]) -> None:
    access, error = (leaves(line) for line in service_log_lines)
    for field in ("@timestamp", "log.level", "message", "service.name", "trace.id", "event.duration"):
        assert field in access, field
    assert (error["log.level"], "error.stack_trace" in error) == ("error", True)


def test_pipeline_expands_dotted_keys_and_moves_the_workers_trace_id() -> None:
    # "log.level" (services) and "trace.id" (gateway) are literal field names until expanded.
    assert 'event.set("[" + key.split(".").join("][") + "]", value)' in PIPELINE
    assert re.search(r'rename => \{ "trace_id" => "\[trace\]\[id\]" \}', PIPELINE)


def test_pipeline_has_balanced_braces_and_three_sections() -> None:
    # Comments, quoted strings (the ruby filter's code) and regex literals may hold braces.
    code = "\n".join(line.split("#", 1)[0] for line in PIPELINE.splitlines())
    code = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|=~\s*/(?:[^/\\]|\\.)*/', '""', code)
    depth = 0
    for char in code:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0
    assert [section for section in re.findall(r"^(\w+) \{", code, flags=re.MULTILINE)] == [
        "input",
        "filter",
        "output",
    ]


def test_filebeat_ships_to_the_port_logstash_listens_on() -> None:
    filebeat = yaml.safe_load((ELK / "filebeat" / "filebeat.yml").read_text())
    port = re.search(r"beats \{\s*port => (\d+)", PIPELINE)
    assert port is not None
    assert filebeat["output.logstash"]["hosts"] == [f"logstash:{port.group(1)}"]


def test_saved_objects_have_unique_ids() -> None:
    assert len(OBJECTS) == len(SAVED_OBJECTS)


def test_every_saved_object_reference_resolves() -> None:
    dangling = [
        (obj["id"], ref["type"], ref["id"])
        for obj in SAVED_OBJECTS
        for ref in obj["references"]
        if (ref["type"], ref["id"]) not in OBJECTS
    ]
    assert dangling == []


def test_embedded_json_parses_and_names_its_references() -> None:
    for obj in SAVED_OBJECTS:
        attributes = obj["attributes"]
        reference_names = {ref["name"] for ref in obj["references"]}
        for key in ("visState", "uiStateJSON", "panelsJSON", "optionsJSON"):
            if key in attributes:
                json.loads(attributes[key])
        source = json.loads(attributes.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}"))
        if "indexRefName" in source:
            assert source["indexRefName"] in reference_names
        if "savedSearchRefName" in attributes:
            assert attributes["savedSearchRefName"] in reference_names
        for panel in json.loads(attributes.get("panelsJSON", "[]")):
            assert panel["panelRefName"] in reference_names


def test_data_view_matches_the_index_template() -> None:
    data_view = OBJECTS[("index-pattern", "microservices-logs")]["attributes"]
    assert (data_view["title"], data_view["timeFieldName"]) == (TEMPLATE["index_patterns"][0], "@timestamp")


def test_errors_search_selects_error_lines_and_the_chart_splits_by_service() -> None:
    search = OBJECTS[("search", "microservices-errors")]["attributes"]
    query = json.loads(search["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    chart_object = OBJECTS[("visualization", "microservices-errors-by-service")]
    chart = json.loads(chart_object["attributes"]["visState"])
    terms = [agg["params"]["field"] for agg in chart["aggs"] if agg["type"] == "terms"]
    assert ("log.level" in query and '"error"' in query, terms) == (True, ["service.name"])


def test_trace_search_follows_one_trace_id_in_order() -> None:
    search = OBJECTS[("search", "microservices-follow-trace")]["attributes"]
    query = json.loads(search["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    assert (query.startswith("trace.id :"), search["sort"]) == (True, [["@timestamp", "asc"]])


def test_saved_searches_show_only_fields_someone_writes(service_log_lines: list[dict[str, Any]]) -> None:
    # With ecs@mappings a field is typed when it first arrives; a column nobody writes stays empty.
    columns = {
        column for obj in SAVED_OBJECTS if obj["type"] == "search" for column in obj["attributes"]["columns"]
    }
    written = {field for line in service_log_lines for field in leaves(line)}
    written |= {"error.message"}  # Logstash's rename of a plain `error` (see the pipeline)
    written |= set(TEMPLATE["template"]["mappings"]["properties"])  # event_type, channel: the workers'
    nginx_conf = (ROOT / "gateway_conf" / "templates" / "nginx.conf").read_text()
    written |= set(re.findall(r"'\"([@\w.]+)\":", nginx_conf))
    assert columns - written == set()
