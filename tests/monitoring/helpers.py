"""What the monitoring tests share: where the files are, the PromQL in the dashboards and rules,
and the metric names our code and the exporters really emit."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
DASHBOARDS_DIR = MONITORING / "grafana" / "dashboards"
PROVISIONING_DIR = MONITORING / "grafana" / "provisioning"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
APP_PACKAGES = ("common", "user_api", "order_api", "notifier", "workers")

# Metrics the dashboards need that no code emits yet, and who should emit them. The live test
# fails on them until they exist; remove an entry once its metric is in the code.
PENDING_METRICS: dict[str, str] = {}

# Grafana's built-in variables and the dashboards' own, and what the tests put in their place
# (the dashboards' "All" is the regex .*).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$service": ".*",
    "$instance": ".*",
}


def tool_or_skip(name: str, package: str) -> str:
    """A program's path. Missing: a failure under CI (the check must run there), a skip elsewhere."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is missing (Debian: apt-get install {package})"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


def promtool_or_skip() -> str:
    return tool_or_skip("promtool", "prometheus")


# --------------------------------------------------------------------------- dashboards


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    @property
    def test_id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref_id}"

    @property
    def promql(self) -> str:
        return grafana_to_promql(self.expr)


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows, rows themselves excluded."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(name, panel["title"], target["refId"], target["expr"])
        for name, dashboard in load_dashboards().items()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


# --------------------------------------------------------------------------- rules


def load_rule_files() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(RULES_DIR.glob("*.yml"))}


def alerting_rules() -> list[dict[str, Any]]:
    return [
        rule
        for rules in load_rule_files().values()
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def recording_rules() -> list[dict[str, Any]]:
    return [
        rule
        for rules in load_rule_files().values()
        for group in rules["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


def load_rule_tests() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(RULE_TESTS_DIR.glob("*.yml"))}


# --------------------------------------------------------------------------- PromQL metric names

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"offset", "atan2", "inf", "nan", "Inf", "NaN"}
)


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = _STRING.sub('""', promql)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name not in _KEYWORDS:
            names.add(name)
    return names


# --------------------------------------------------------------------------- what really exists

_METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("_sum", "_count", "_created"),
    "Info": ("_info",),
    "Gauge": ("",),
    "Enum": ("",),
}
# prometheus_client's default collectors, in every service's /metrics.
CLIENT_DEFAULT_METRICS = frozenset(
    {"python_info", "python_gc_objects_collected_total", "python_gc_objects_uncollectable_total"}
    | {"python_gc_collections_total", "process_cpu_seconds_total", "process_open_fds", "process_max_fds"}
    | {"process_virtual_memory_bytes", "process_resident_memory_bytes", "process_start_time_seconds"}
)


def _declared_metrics(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func, first = node.func, node.args[0]
        kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if kind not in _METRIC_CLASSES or not isinstance(first, ast.Constant):
            continue
        name = str(first.value)
        base = name.removesuffix("_total") if kind == "Counter" else name
        names.update(base + suffix for suffix in _SUFFIXES[kind])
    return names


def code_metric_names() -> set[str]:
    """Metrics declared with prometheus_client in our packages and in Dramatiq's Prometheus middleware."""
    sources = [path for package in APP_PACKAGES for path in (ROOT / package).rglob("*.py")]
    spec = importlib.util.find_spec("dramatiq.middleware.prometheus")
    if spec is not None and spec.origin is not None:
        sources.append(Path(spec.origin))
    names = set(CLIENT_DEFAULT_METRICS)
    for path in sources:
        names |= _declared_metrics(path.read_text())
    return names


def exporter_metric_names() -> set[str]:
    lines = (Path(__file__).parent / "exporter_metrics.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def poll(what: str, probe: Callable[[], Any], seconds: float, *, every_s: float = 0.5) -> Any:
    """The first truthy result of ``probe`` within ``seconds`` (an OSError counts as not yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = probe()
        except OSError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds:.0f} s")
        time.sleep(every_s)
