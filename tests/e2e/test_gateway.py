"""What the gateway promises: headers, authorization across services, failover, rate limits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.conftest import GATEWAY_URL, User, eventually

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("RUN_DIR", ROOT / "var" / "run"))
ORDER = {"currency": "EUR", "items": [{"sku": "MUG-1", "name": "A mug", "quantity": 1, "unit_price": "8.00"}]}

pytestmark = pytest.mark.live_stack


def test_the_seed_health_checks_answer(http: requests.Session) -> None:
    for path in ("/health", "/health/user", "/health/order", "/health/notification"):
        response = http.get(f"{GATEWAY_URL}{path}", timeout=5)
        assert response.status_code == 200, path
        assert response.json()["status"] == "UP", path


def test_security_headers_on_success_and_on_errors(http: requests.Session) -> None:
    for path, status in (("/health", 200), ("/api/orders", 401), ("/api/nowhere", 404)):
        response = http.get(f"{GATEWAY_URL}{path}", timeout=5)
        assert response.status_code == status, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] in ("DENY", "SAMEORIGIN"), path
        assert "Referrer-Policy" in response.headers, path
        assert "nginx/" not in response.headers.get("Server", ""), path
        assert response.headers.get("X-Request-ID"), path
    api = http.get(f"{GATEWAY_URL}/api/orders", timeout=5)
    assert "no-store" in api.headers["Cache-Control"]


def test_a_request_id_is_passed_through_to_the_service(http: requests.Session) -> None:
    response = http.get(f"{GATEWAY_URL}/api/users/me", headers={"X-Request-ID": "e2e-trace-42"}, timeout=5)
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "e2e-trace-42"
    # A W3C traceparent wins, at the gateway as in the services: one id in every log.
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = http.get(
        f"{GATEWAY_URL}/api/users/me",
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01", "X-Request-ID": "ignored-1"},
        timeout=5,
    )
    assert traced.headers["X-Request-ID"] == trace


def test_object_level_authorization_through_the_gateway(
    http: requests.Session, new_user: Callable[..., User]
) -> None:
    alice, bob = new_user(), new_user()
    order = http.post(f"{GATEWAY_URL}/api/orders", json=ORDER, headers=alice.auth, timeout=10).json()
    for method, path in (
        ("GET", f"/api/orders/{order['id']}"),
        ("DELETE", f"/api/orders/{order['id']}"),
        ("GET", f"/api/users/{alice.id}"),
        ("DELETE", f"/api/users/{alice.id}"),
    ):
        response = http.request(method, f"{GATEWAY_URL}{path}", headers=bob.auth, timeout=10)
        assert response.status_code == 404, (method, path, response.status_code)
    status = http.put(
        f"{GATEWAY_URL}/api/orders/{order['id']}/status",
        json={"status": "CANCELLED"},
        headers=bob.auth,
        timeout=10,
    )
    assert status.status_code == 404
    listing = http.get(f"{GATEWAY_URL}/api/orders", headers=bob.auth, timeout=10).json()
    assert order["id"] not in {o["id"] for o in listing["items"]}
    users = http.get(f"{GATEWAY_URL}/api/users", headers=bob.auth, timeout=10)
    assert users.status_code == 403


def _restart(name: str, pid: int, cmdline: list[str]) -> None:
    if (RUN_DIR / "supervisor.sock").exists():
        # supervisord restarts it by itself; a second copy started here would hold the port
        # and outlive `deploy.sh stop` (supervisord does not know it).
        return
    log = open(ROOT / "var" / "log" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen(cmdline, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    (RUN_DIR / f"{name}.pid").write_text(f"{child.pid}\n")


def test_a_killed_api_instance_fails_no_get(http: requests.Session, admin: User) -> None:
    name = "user_api_2"
    pid = int((RUN_DIR / f"{name}.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGKILL)
    try:
        statuses = [
            http.get(f"{GATEWAY_URL}/api/users/me", headers=admin.auth, timeout=10).status_code
            for _ in range(40)
        ]
        assert statuses == [200] * 40
    finally:
        _restart(name, pid, [part.decode() for part in cmdline])
        port = cmdline[cmdline.index(b"--port") + 1].decode()
        eventually(lambda: _ready(f"http://127.0.0.1:{port}/health/ready"), what=f"{name} back")


@pytest.mark.parametrize("service", ["user", "order", "notification"])
def test_the_public_documents_list_only_what_the_gateway_routes(http: requests.Session, service: str) -> None:
    as_yaml = http.get(f"{GATEWAY_URL}/openapi/{service}.yaml", timeout=5)
    as_json = http.get(f"{GATEWAY_URL}/openapi/{service}.json", timeout=5)
    assert as_yaml.status_code == as_json.status_code == 200
    document = as_json.json()
    assert document == yaml.safe_load(as_yaml.text)
    assert all(path.startswith("/api/") for path in document["paths"])
    for path in ("/health/ready", "/metrics", "/openapi.yaml", "/openapi/instance.yaml"):
        answer = http.get(f"{GATEWAY_URL}{path}", timeout=5)
        assert answer.status_code == 404, path
        assert answer.headers["Content-Type"] == "application/problem+json", path
        assert answer.json()["instance"] == path
        assert answer.json()["request_id"] == answer.headers["X-Request-ID"]


def test_an_undeclared_method_is_a_405_problem_with_allow(
    http: requests.Session, new_user: Callable[..., User]
) -> None:
    user = new_user()
    order = http.post(f"{GATEWAY_URL}/api/orders", json=ORDER, headers=user.auth, timeout=10).json()
    path = f"/api/orders/{order['id']}"
    # TRACE is nginx's own 405; PATCH the service's: both problems with the documented methods.
    for method, allow in (("TRACE", {"DELETE", "GET", "HEAD"}), ("PATCH", {"DELETE", "GET", "HEAD"})):
        answer = http.request(method, f"{GATEWAY_URL}{path}", headers=user.auth, timeout=5)
        assert answer.status_code == 405, method
        # The media type; the service's answer adds "; charset=utf-8", nginx's does not.
        assert answer.headers["Content-Type"].split(";")[0] == "application/problem+json", method
        assert {m.strip() for m in answer.headers["Allow"].split(",")} == allow, method
        assert answer.json()["instance"] == path, method


def _declared_paths() -> list[tuple[str, str]]:
    """Every path of the three public documents, with the methods they declare (HEAD with GET)."""
    found = []
    for package in ("user_api", "order_api", "notifier"):
        document = yaml.safe_load((ROOT / package / "openapi.yaml").read_text())
        for route, item in document["paths"].items():
            methods = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
            found.append((route, ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))))
    return found


@pytest.mark.parametrize(("route", "allow"), _declared_paths())
def test_every_declared_path_answers_an_undeclared_method_with_a_405_problem(
    http: requests.Session, admin: User, route: str, allow: str
) -> None:
    # TRACE is nginx's own 405 (the Allow from its map), another undeclared method the service's:
    # both must list exactly what the document declares, or schemathesis' unsupported_method fails.
    path = re.sub(r"\{[^}]+\}", "0e60df92-f823-4d99-a5e3-82cbad3c3ba1", route)
    other = next(m for m in ("PATCH", "PUT", "POST", "DELETE") if m not in allow.split(", "))
    for method in ("TRACE", other):
        answer = http.request(method, f"{GATEWAY_URL}{path}", headers=admin.auth, timeout=5)
        assert answer.status_code == 405, (method, answer.status_code)
        assert answer.headers["Content-Type"].split(";")[0] == "application/problem+json", method
        assert {m.strip() for m in answer.headers["Allow"].split(",")} == set(allow.split(", ")), method
        assert answer.json()["instance"] == path, method


def _ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_zz_login_bursts_get_429_from_the_gateway(http: requests.Session) -> None:
    # Named to run last in this module: it spends the login budget of this address.
    statuses = [
        http.post(
            f"{GATEWAY_URL}/api/auth/login", json={"email": "nobody@example.com", "password": "x"}, timeout=10
        ).status_code
        for _ in range(25)
    ]
    assert 429 in statuses
    assert 503 not in statuses
    limited = http.post(
        f"{GATEWAY_URL}/api/auth/login", json={"email": "nobody@example.com", "password": "x"}, timeout=10
    )
    if limited.status_code == 429:  # the service's own per-email limit answers 429 too
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["Content-Type"] == "application/problem+json"
        assert limited.json()["instance"] == "/api/auth/login"
    # Wrong passwords are 401 until the bucket is empty (it may be already, after a previous run).
    assert set(statuses) <= {401, 429}
    time.sleep(4)  # let the bucket refill a little for whatever runs next
