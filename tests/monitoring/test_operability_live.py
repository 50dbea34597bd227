"""Issue 14's "Done when", on a running `./scripts/deploy.sh local` stack, through its own scripts:

- stopping the workers (`deploy.sh ctl stop workers`) reaches the development receiver within a
  minute, with the service's label and an absolute runbook link;
- every program supervisord runs has its output rotated by size, every log written since the
  stack started is one of those files (nothing keeps a log of its own that nobody rotates, as
  the gateway's access log once did), and each stays under its limit;
- every line our processes wrote during this module (the workers' restart and an order they
  processed on their threads included) is JSON naming its service, with one trace id field.

Run with `pytest -m live_stack tests/monitoring` (scripts/integration-tests.sh does).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring.helpers import ROOT, RUNBOOKS, poll

pytestmark = pytest.mark.live_stack

GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1").rstrip("/")
PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/")
ALERT_SINK_URL = f"http://127.0.0.1:{os.environ.get('ALERT_SINK_PORT', '9095')}"
WORKERS_URL = f"http://127.0.0.1:{os.environ.get('WORKERS_METRICS_PORT', '9191')}/"
LOG_DIR = Path(os.environ.get("LOG_DIR", ROOT / "var" / "log"))
SUPERVISOR_DIR = Path(os.environ.get("SUPERVISOR_DIR", ROOT / "var" / "supervisor"))
RUN_DIR = Path(os.environ.get("RUN_DIR", ROOT / "var" / "run"))
ALERT_DEADLINE_S = 60.0
# supervisord rotates after the write that crosses the limit: one pipe read past it at most.
ROTATION_SLACK_BYTES = 128 * 1024
OUR_PROGRAM = re.compile(r"'-m' '(user_api|order_api|notifier|workers)\b")
_SIZE = re.compile(r"^(\d+)(KB|MB|GB)?$")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the local stack
        return json.loads(response.read())


def send(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{GATEWAY_URL}{path}", data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def deploy_ctl(*args: str) -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / "deploy.sh"), "ctl", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout + result.stderr


def workers_ready() -> bool:
    with urllib.request.urlopen(WORKERS_URL, timeout=2) as response:
        return bool(response.status == 200)


def programs() -> dict[str, configparser.SectionProxy]:
    """The running supervisord's programs, as scripts/lib.sh wrote them."""
    config = configparser.RawConfigParser()
    paths = sorted((SUPERVISOR_DIR / "programs").glob("*.conf"))
    config.read([SUPERVISOR_DIR / "supervisord.conf", *paths])
    return {section: config[section] for section in config.sections()}


def size_bytes(value: str) -> int:
    match = _SIZE.match(value.strip())
    assert match, f"not a size: {value!r}"
    return int(match.group(1)) * {None: 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[match.group(2)]


def rotated_logs() -> dict[Path, tuple[int, int]]:
    """Every log file supervisord writes, with its size limit and how many old files it keeps."""
    logs: dict[Path, tuple[int, int]] = {}
    for name, section in programs().items():
        prefixes = ["stdout_", "stderr_"] if name.startswith(("program:", "eventlistener:")) else [""]
        for prefix in prefixes:
            path = section.get(f"{prefix}logfile", "")
            if not path or path == "NONE":
                continue
            assert size_bytes(section.get(f"{prefix}logfile_maxbytes", "0")) > 0, (
                f"{name}: {prefix}log unbounded"
            )
            assert int(section.get(f"{prefix}logfile_backups", "0")) >= 1, f"{name}: no old {prefix}log kept"
            limits = (
                size_bytes(section[f"{prefix}logfile_maxbytes"]),
                int(section[f"{prefix}logfile_backups"]),
            )
            logs[Path(path)] = limits
        if name.startswith("program:") and section.get("redirect_stderr") != "true":
            assert section.get("stderr_logfile"), f"{name}: stderr goes to supervisord's own temp files"
    return logs


def our_logs() -> list[Path]:
    """The stdout logs of our own programs (Python services and stand-ins, the gateway's access log)."""
    return sorted(
        Path(section["stdout_logfile"])
        for name, section in programs().items()
        if name == "program:gateway"
        or (name.startswith("program:") and OUR_PROGRAM.search(section["command"]))
    )


@pytest.fixture(scope="module", autouse=True)
def offsets() -> dict[Path, int]:
    """Where each of our logs ends before this module runs: the lines after it are its own."""
    if not (RUN_DIR / "supervisor.sock").exists():
        pytest.fail("no host-mode supervisord (./scripts/deploy.sh local)")
    return {path: path.stat().st_size if path.exists() else 0 for path in our_logs()}


def test_stopped_workers_reach_the_development_receiver_within_a_minute() -> None:
    # QueueWithoutConsumers fires only for a queue that had consumers: Prometheus must have seen them.
    poll(
        "consumers of the orders queue in Prometheus",
        lambda: get_json(
            f"{PROMETHEUS_URL}/api/v1/query?query="
            + urllib.parse.quote('sum(rabbitmq_detailed_queue_consumers{queue="orders"}) > 0')
        )["data"]["result"],
        120,
    )

    def workers_alerts() -> list[dict[str, Any]]:
        items = get_json(f"{ALERT_SINK_URL}/alerts?status=firing")["items"]
        return [a for a in items if a["labels"].get("service") == "workers" and a["received_at"] > since]

    since = datetime.now(UTC).isoformat()
    started = time.monotonic()
    output = deploy_ctl("stop", "workers")
    try:
        assert "stopped" in output, output
        alerts = poll("workers alert at the development receiver", workers_alerts, ALERT_DEADLINE_S)
        elapsed = time.monotonic() - started
    finally:
        deploy_ctl("start", "workers")
        poll("workers ready again", workers_ready, 90)
    print(f"workers stopped → {alerts[0]['labels']['alertname']} at the receiver after {elapsed:.1f} s")
    assert elapsed <= ALERT_DEADLINE_S
    anchors = {
        f"#{heading[3:].strip().lower()}"
        for heading in RUNBOOKS.read_text().splitlines()
        if heading.startswith("## ")
    }
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert urllib.parse.urlparse(url).scheme in {"file", "http", "https"}, url
        assert f"#{alert['labels']['alertname'].lower()}" in anchors, url
        assert url.endswith(f"#{alert['labels']['alertname'].lower()}"), url
        assert alert["receiver"] == "oncall-critical"


def born(path: Path) -> float:
    """When the file was created (statx birth time), 0 where the file system does not say."""
    out = subprocess.run(["stat", "-c", "%W", str(path)], capture_output=True, text=True, check=False)
    return float(out.stdout.strip() or 0)


def test_every_log_is_rotated_by_size_and_under_its_limit() -> None:
    logs = rotated_logs()
    started = (RUN_DIR / "supervisord.pid").stat().st_mtime
    written = {p for p in LOG_DIR.glob("*.log") if p.stat().st_mtime >= started}
    assert written - set(logs) == set(), "written since the stack started but rotated by nobody"
    checked = 0
    for path, (limit, backups) in logs.items():
        for old in [path, *(path.with_name(f"{path.name}.{n}") for n in range(1, backups + 1))]:
            if not old.exists():
                continue
            # A file created by an earlier run holds that run's limit (LOG_MAX_BYTES may have
            # changed): supervisord rotates it at this run's first write, content and all.
            created = born(old) or old.stat().st_mtime
            if created >= started or (old == path and old.stat().st_mtime >= started):
                assert old.stat().st_size <= limit + ROTATION_SLACK_BYTES, old
                checked += 1
        assert not path.with_name(f"{path.name}.{backups + 1}").exists(), f"{path}: more old files than kept"
    assert checked


def service_and_trace_fields(line: str) -> tuple[str, int]:
    entry = json.loads(line)
    assert isinstance(entry, dict)
    nested = entry.get("service")
    name = nested.get("name") if isinstance(nested, dict) else entry.get("service.name")
    trace = entry.get("trace")
    fields = ("trace_id" in entry) + ("trace.id" in entry) + (isinstance(trace, dict) and "id" in trace)
    return str(name or ""), int(fields)


def test_every_line_of_our_processes_names_its_service_with_one_trace_id(offsets: dict[Path, int]) -> None:
    email = f"ops-{uuid.uuid4().hex[:10]}@example.com"
    status, _ = send(
        "POST", "/api/auth/register", {"email": email, "password": "correct horse battery", "name": "Ops"}
    )
    assert status == 201
    status, tokens = send("POST", "/api/auth/login", {"email": email, "password": "correct horse battery"})
    assert status == 200, tokens
    token = tokens["access_token"]
    body = {
        "currency": "EUR",
        "items": [{"sku": "OPS-1", "name": "Item", "quantity": 1, "unit_price": "5.00"}],
    }
    status, order = send("POST", "/api/orders", body, token)
    assert status == 201, order

    def confirmed() -> bool:
        status, read = send("GET", f"/api/orders/{order['id']}", token=token)
        return status == 200 and read["status"] == "CONFIRMED"

    poll("the order confirmed by the workers", confirmed, 60)
    time.sleep(2)  # the workers' last lines of that job, and supervisord's copy of them

    bad: list[str] = []
    workers_traced = 0
    for path, offset in offsets.items():
        with path.open("rb") as file:
            file.seek(offset)
            new = file.read().decode(errors="replace").splitlines()
        for line in filter(str.strip, new):
            try:
                name, trace_fields = service_and_trace_fields(line)
            except (ValueError, AssertionError):
                bad.append(f"{path.name}: not a JSON object: {line[:160]}")
                continue
            if not name or trace_fields > 1:
                bad.append(f"{path.name}: service {name!r}, {trace_fields} trace id fields: {line[:160]}")
            if path.name == "workers.log" and name == "workers" and trace_fields == 1:
                workers_traced += 1
    assert bad == []
    # The workers' job lines (logged on their threads, each with the event's trace id) were read.
    assert workers_traced > 0
