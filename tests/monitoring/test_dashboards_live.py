"""Against a running stack (`./scripts/deploy.sh local`, Prometheus at PROMETHEUS_URL): send an
order through the system, then run every dashboard panel's query on Prometheus. A query that
Prometheus rejects, or that still returns no series after LIVE_STACK_TIMEOUT_S, fails.

Run with `pytest -m live_stack tests/monitoring`. Traffic goes to GATEWAY_URL when it is set,
otherwise straight to USER_API_URL, ORDER_API_URL and NOTIFIER_URL.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.monitoring.helpers import alerting_rules, panel_queries

pytestmark = pytest.mark.live_stack

PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/")
GATEWAY_URL = os.environ.get("GATEWAY_URL", "").rstrip("/")
USER_API_URL = GATEWAY_URL or os.environ.get("USER_API_URL", "http://127.0.0.1:8081")
ORDER_API_URL = GATEWAY_URL or os.environ.get("ORDER_API_URL", "http://127.0.0.1:8082")
NOTIFIER_URL = GATEWAY_URL or os.environ.get("NOTIFIER_URL", "http://127.0.0.1:8083")
# Long enough for two scrapes after the traffic and for the order to be confirmed and notified.
TIMEOUT_S = float(os.environ.get("LIVE_STACK_TIMEOUT_S", "180"))
QUERIES = panel_queries()
TRACE_ID = f"monitoring-live-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Outcome:
    series: int
    error: str | None = None


def call(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"X-Request-ID": TRACE_ID, "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        pytest.fail(f"{method} {url}: {exc} — is ./scripts/deploy.sh local running?")
    return status, json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw


def prometheus(path: str, **params: str) -> tuple[int, Any]:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return call("GET", f"{PROMETHEUS_URL}{path}{query}")


def run_query(promql: str) -> Outcome:
    status, body = prometheus("/api/v1/query", query=promql)
    if status != 200 or body.get("status") != "success":
        return Outcome(0, f"HTTP {status}: {body.get('error') if isinstance(body, dict) else body!r}")
    return Outcome(len(body["data"]["result"]))


@pytest.fixture(scope="module")
def traffic() -> dict[str, Any]:
    """A user who registers, logs in, places an order, reads it back; a 404 and a 401 on the side."""
    email = f"monitoring-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery staple"
    status, _ = call(
        "POST", f"{USER_API_URL}/api/auth/register", {"email": email, "password": password, "name": "Probe"}
    )
    assert status == 201, f"register: HTTP {status}"
    status, tokens = call("POST", f"{USER_API_URL}/api/auth/login", {"email": email, "password": password})
    assert status == 200, f"login: HTTP {status}"
    token = tokens["access_token"]
    call("GET", f"{USER_API_URL}/api/users/me", token=token)
    item = {"sku": "MON-1", "name": "Probe", "quantity": 2, "unit_price": "4.50"}
    order_body = {"currency": "EUR", "items": [item]}
    status, order = call("POST", f"{ORDER_API_URL}/api/orders", order_body, token=token)
    assert status == 201, f"create order: HTTP {status} {order}"
    call("GET", f"{ORDER_API_URL}/api/orders", token=token)
    call("GET", f"{ORDER_API_URL}/api/orders/{uuid.uuid4()}", token=token)  # 404
    call("GET", f"{ORDER_API_URL}/api/orders")  # 401
    call("GET", f"{NOTIFIER_URL}/api/notifications", token=token)

    # Wait for orders.process, so "confirmed" has something to count (the query test says if not).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, order = call("GET", f"{ORDER_API_URL}/api/orders/{order['id']}", token=token)
        if order.get("status") != "PENDING":
            break
        time.sleep(1)
    return {"trace_id": TRACE_ID, "order": order}


@pytest.fixture(scope="module")
def query_outcomes(traffic: dict[str, Any]) -> dict[str, Outcome]:
    """Every panel query, retried until it returns series or the time is up (new series need two scrapes)."""
    outcomes: dict[str, Outcome] = {}
    waiting = {query.test_id: query for query in QUERIES}
    deadline = time.monotonic() + TIMEOUT_S
    while waiting:
        for test_id, query in list(waiting.items()):
            outcomes[test_id] = run_query(query.promql)
            if outcomes[test_id].series or outcomes[test_id].error:
                del waiting[test_id]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(5)
    return outcomes


def test_every_target_is_up() -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        _, body = prometheus("/api/v1/targets", state="active")
        down = {
            target["scrapeUrl"]: target["lastError"] or target["health"]
            for target in body["data"]["activeTargets"]
            if target["health"] != "up"
        }
        if not down or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert down == {}


def test_every_alert_rule_is_loaded_and_evaluates() -> None:
    # A group not evaluated yet (a fresh stack, a longer group interval) says "unknown": wait for
    # every rule's first evaluation, then none may have failed.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        _, body = prometheus("/api/v1/rules", type="alert")
        loaded = {rule["name"]: rule for group in body["data"]["groups"] for rule in group["rules"]}
        pending = [name for name, rule in loaded.items() if rule["health"] == "unknown"]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(loaded) == {rule["alert"] for rule in alerting_rules()}
    assert {
        name: rule["lastError"] or rule["health"] for name, rule in loaded.items() if rule["health"] != "ok"
    } == {}


@pytest.mark.parametrize("query", QUERIES, ids=[query.test_id for query in QUERIES])
def test_panel_query_returns_series(query: Any, query_outcomes: dict[str, Outcome]) -> None:
    outcome = query_outcomes[query.test_id]
    assert outcome.error is None, f"Prometheus rejects {query.promql}: {outcome.error}"
    assert outcome.series > 0, f"no series after {TIMEOUT_S:.0f}s for {query.promql}"
