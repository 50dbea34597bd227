"""The gateway's behaviour, with real nginx in front of small real HTTP servers.

The configuration is rendered exactly as host mode renders it; only ports, file locations
and the CORS allow-list are the test's own. Upstream instances are separate processes
(tests/config/echo_upstream.py) so that one can be killed for real.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway_conf.config import GatewayConfig
from gateway_conf.devcert import ensure_dev_certificate
from gateway_conf.environment import config_from_env
from gateway_conf.render import make_host_folders, write
from tests.config.conftest import ROOT
from tests.net import free_port, stop_process, wait_for_port

ECHO = Path(__file__).with_name("echo_upstream.py")
ALLOWED_ORIGIN = "https://app.example.com"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclasses.dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass
class Gateway:
    http_port: int
    https_port: int
    status_port: int
    instances: dict[str, int]  # instance name -> port
    processes: dict[str, subprocess.Popen[bytes]]
    access_log: Path
    ca_file: Path

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        tls: bool = False,
        port: int | None = None,
    ) -> Answer:
        if tls:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "localhost", self.https_port, timeout=10, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def stats(self, instance: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.instances[instance], timeout=5)
        try:
            conn.request("GET", "/_stats")
            return dict(json.loads(conn.getresponse().read()))
        finally:
            conn.close()

    def hits(self, path: str, *instances: str) -> int:
        return sum(
            count
            for name in instances
            for key, count in self.stats(name)["hits"].items()
            if key.split(" ", 1)[1] == path
        )

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def matching_log_entries(
        self, predicate: Callable[[dict[str, Any]], bool], at_least: int = 1
    ) -> list[dict[str, Any]]:
        """Lines matching ``predicate``, waiting a moment for them: nginx writes a line only once
        the response is out, so the client can be ahead of the log."""
        deadline = time.monotonic() + 5
        while True:
            found = [e for e in self.log_entries() if predicate(e)]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def _render_host_config(tmp: Path, instances: dict[str, int], ports: dict[str, int]) -> GatewayConfig:
    def addresses(*names: str) -> str:
        return ",".join(f"127.0.0.1:{instances[name]}" for name in names)

    env = {
        "GATEWAY_HTTP_PORT": str(ports["http"]),
        "GATEWAY_HTTPS_PORT": str(ports["https"]),
        "GATEWAY_STATUS_PORT": str(ports["status"]),
        "GATEWAY_LISTEN_ADDRESS": "127.0.0.1",
        "GATEWAY_USER_API_UPSTREAMS": addresses("user_api-1", "user_api-2"),
        "GATEWAY_ORDER_API_UPSTREAMS": addresses("order_api-1", "order_api-2"),
        "GATEWAY_NOTIFIER_UPSTREAMS": addresses("notifier-1"),
        "CORS_ALLOWED_ORIGINS": f"{ALLOWED_ORIGIN}, http://localhost:3000",
        "GATEWAY_TLS_CERT": str(tmp / "tls/tls.crt"),
        "GATEWAY_TLS_KEY": str(tmp / "tls/tls.key"),
        "LOG_DIR": str(tmp / "log"),
    }
    cfg = config_from_env("host", env, root=tmp)
    # Unbuffered, so each request's line can be read at once; two workers, as on a small host.
    return dataclasses.replace(cfg, access_log=str(tmp / "log/gateway.access.log"), worker_processes="2")


def _start_nginx(nginx: str, tmp: Path, cfg: GatewayConfig) -> subprocess.Popen[bytes]:
    make_host_folders(cfg)
    ensure_dev_certificate(Path(cfg.tls_cert), Path(cfg.tls_key), server_name="localhost", app_env="test")
    conf = write(cfg, tmp / "var/gateway/conf")
    prefix = ["-p", f"{tmp}/var/gateway/", "-c", str(conf), "-e", cfg.error_log]
    check = subprocess.run([nginx, *prefix, "-t", "-q"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    # In the foreground, so the test owns the process and its end.
    return subprocess.Popen([nginx, *prefix, "-g", "daemon off;"])


@pytest.fixture(scope="module")
def gateway(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    names = ["user_api-1", "user_api-2", "order_api-1", "order_api-2", "notifier-1"]
    instances = {name: free_port() for name in names}
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(ECHO), "--port", str(port), "--name", name.split("-")[0]], cwd=ROOT
        )
        for name, port in instances.items()
    }
    ports = {"http": free_port(), "https": free_port(), "status": free_port()}
    nginx = None
    try:
        for name, port in instances.items():
            wait_for_port(port, processes[name], name)
        cfg = _render_host_config(tmp, instances, ports)
        nginx = _start_nginx(nginx_bin, tmp, cfg)
        wait_for_port(ports["http"], nginx, "nginx")
        yield Gateway(
            http_port=ports["http"],
            https_port=ports["https"],
            status_port=ports["status"],
            instances=instances,
            processes=processes,
            access_log=tmp / "log/gateway.access.log",
            ca_file=Path(cfg.tls_cert),
        )
    finally:
        if nginx is not None:
            stop_process(nginx, signal.SIGQUIT)
        for process in processes.values():
            stop_process(process)


def assert_security_headers(answer: Answer) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get_all(name) == [value], f"{name} on a {answer.status}"
    assert answer.header("X-Request-ID")


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "service", "upstream_path"),
    [
        ("/api/auth/register", "user_api", "/api/auth/register"),
        ("/api/users", "user_api", "/api/users"),
        ("/api/users/42?fields=email", "user_api", "/api/users/42"),
        ("/api/orders", "order_api", "/api/orders"),
        ("/api/orders/7/status", "order_api", "/api/orders/7/status"),
        ("/api/notifications", "notifier", "/api/notifications"),
        ("/api/notifications/send", "notifier", "/api/notifications/send"),
        ("/health/user", "user_api", "/health"),
        ("/health/order", "order_api", "/health"),
        ("/health/notification", "notifier", "/health"),
    ],
)
def test_each_prefix_reaches_its_service(
    gateway: Gateway, path: str, service: str, upstream_path: str
) -> None:
    answer = gateway.request("GET", path)
    assert answer.status == 200
    assert answer.json()["service"] == service
    assert answer.json()["path"] == upstream_path


def test_query_string_is_passed_unchanged(gateway: Gateway) -> None:
    assert gateway.request("GET", "/api/users?limit=10&offset=20").json()["query"] == "limit=10&offset=20"


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/openapi/user.yaml", "user_api"),
        ("/openapi/order.yaml", "order_api"),
        ("/openapi/notification.yaml", "notifier"),
    ],
)
def test_openapi_documents_are_published(gateway: Gateway, path: str, service: str) -> None:
    answer = gateway.request("GET", path)
    assert answer.status == 200
    assert f"title: {service}" in answer.body.decode()
    assert answer.headers.get_all("Cache-Control") == ["no-cache"]


@pytest.mark.parametrize("service", ["user", "order", "notification"])
def test_openapi_documents_are_published_as_json_too(gateway: Gateway, service: str) -> None:
    answer = gateway.request("GET", f"/openapi/{service}.json")
    assert answer.status == 200
    assert answer.json()["path"] == "/openapi.json"
    assert answer.json()["service"] == {"user": "user_api", "order": "order_api"}.get(service, "notifier")


def test_gateway_answers_its_own_health(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/health")
    assert answer.status == 200
    assert answer.json() == {"status": "UP", "service": "gateway"}
    assert answer.header("Content-Type") == "application/json"
    assert_security_headers(answer)


@pytest.mark.parametrize("path", ["/metrics", "/api/usersfoo", "/", "/health/ready", "/openapi.yaml"])
def test_unrouted_paths_are_a_problem_404_from_the_gateway(gateway: Gateway, path: str) -> None:
    answer = gateway.request("GET", path)
    assert answer.status == 404
    assert answer.header("Content-Type") == "application/problem+json"
    assert answer.json()["status"] == 404
    assert_security_headers(answer)
    assert answer.json()["request_id"] == answer.header("X-Request-ID")
    assert answer.json()["instance"] == path


def assert_gateway_problem(answer: Answer, status: int, instance: str) -> dict[str, Any]:
    """The gateway's own error in the services' shape: problem+json, instance, request id."""
    assert answer.status == status
    assert answer.header("Content-Type") == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == "about:blank"
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["instance"] == instance
    assert problem["request_id"] == answer.header("X-Request-ID")
    assert_security_headers(answer)
    return dict(problem)


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/orders/0e60df92-f823-4d99-a5e3-82cbad3c3ba1", "DELETE, GET, HEAD"),
        ("/api/orders/0e60df92-f823-4d99-a5e3-82cbad3c3ba1/status", "PUT"),
        ("/api/orders", "GET, HEAD, POST"),
        ("/api/users/me", "GET, HEAD"),
        ("/api/auth/login", "POST"),
        ("/health", "GET, HEAD"),
        ("/health/user", "GET, HEAD"),
    ],
)
def test_trace_is_a_405_problem_with_the_documented_methods_in_allow(
    gateway: Gateway, path: str, allow: str
) -> None:
    # nginx answers TRACE itself, before any location: the Allow comes from the documents.
    answer = gateway.request("TRACE", path)
    assert_gateway_problem(answer, 405, path)
    assert answer.header("Allow") == allow


@pytest.mark.parametrize(
    "path", ["/health", "/health/order", "/openapi/user.yaml", "/openapi/order.json", "/docs/"]
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_what_the_gateway_serves_itself_is_read_only(gateway: Gateway, path: str, method: str) -> None:
    answer = gateway.request(method, path, headers={"Content-Type": "application/json"}, body=b"{}")
    assert_gateway_problem(answer, 405, path)
    assert answer.header("Allow") == "GET, HEAD"


def test_stub_status_is_on_the_local_status_port_only(gateway: Gateway) -> None:
    status = gateway.request("GET", "/stub_status", port=gateway.status_port)
    assert status.status == 200
    assert b"Active connections" in status.body
    assert gateway.request("GET", "/stub_status").status == 404


# --- headers -----------------------------------------------------------------------------------


def test_api_answers_carry_security_headers_once_and_no_store(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/api/orders")
    assert answer.status == 200
    # The instance says SAMEORIGIN and max-age=60: the gateway's values replace, not add to, them.
    assert_security_headers(answer)
    assert answer.headers.get_all("Cache-Control") == ["no-store"]
    assert answer.header("Strict-Transport-Security") is None  # plain HTTP


def test_server_identity_is_hidden(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/api/users")
    assert answer.header("Server") == "nginx"
    assert answer.header("X-Powered-By") is None


def test_hsts_is_sent_over_tls(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/api/users", tls=True)
    assert answer.status == 200
    assert answer.header("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
    assert_security_headers(answer)
    missing = gateway.request("GET", "/nowhere", tls=True)
    assert missing.header("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"


def test_client_address_is_stated_by_the_gateway_not_the_client(gateway: Gateway) -> None:
    seen = gateway.request(
        "GET", "/api/users", headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
    )
    headers = seen.json()["headers"]
    assert headers["X-Real-IP"] == "127.0.0.1"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"


# --- request ids and the access log -------------------------------------------------------------


def test_request_id_is_generated_passed_on_and_logged(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/api/orders/1")
    request_id = answer.json()["headers"]["X-Request-ID"]
    assert len(request_id) == 32
    assert answer.headers.get_all("X-Request-ID") == [request_id]
    [entry] = gateway.matching_log_entries(lambda e: e["http.request.id"] == request_id)
    assert entry["url.original"] == "/api/orders/1"
    assert entry["http.response.status_code"] == 200
    assert entry["gateway.upstream_addr"] in {
        f"127.0.0.1:{gateway.instances['order_api-1']}",
        f"127.0.0.1:{gateway.instances['order_api-2']}",
    }
    assert isinstance(entry["gateway.request_time"], float)
    assert entry["trace.id"] == request_id


def test_incoming_request_id_is_kept(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/api/users", headers={"X-Request-ID": "client-id.42"})
    assert answer.json()["headers"]["X-Request-ID"] == "client-id.42"
    assert answer.header("X-Request-ID") == "client-id.42"


def test_unsafe_request_id_is_replaced(gateway: Gateway) -> None:
    answer = gateway.request("GET", "/api/users", headers={"X-Request-ID": 'x" injected "y'})
    passed = answer.json()["headers"]["X-Request-ID"]
    assert passed != 'x" injected "y'
    assert len(passed) == 32


def test_every_access_log_line_is_json(gateway: Gateway) -> None:
    gateway.request("GET", '/api/users?q="quoted"\\')
    entries = gateway.log_entries()
    assert entries
    assert all(
        {"http.request.id", "http.response.status_code", "gateway.upstream_addr"} <= e.keys() for e in entries
    )


# --- CORS --------------------------------------------------------------------------------------


def test_preflight_from_an_allowed_origin_is_answered_by_the_gateway(gateway: Gateway) -> None:
    before = gateway.hits("/api/orders", "order_api-1", "order_api-2")
    answer = gateway.request(
        "OPTIONS",
        "/api/orders",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert answer.status == 204
    assert answer.header("Access-Control-Allow-Origin") == ALLOWED_ORIGIN
    assert "POST" in (answer.header("Access-Control-Allow-Methods") or "")
    assert "Authorization" in (answer.header("Access-Control-Allow-Headers") or "")
    assert answer.header("Access-Control-Max-Age") == "600"
    assert answer.header("Vary") == "Origin"
    assert_security_headers(answer)
    assert gateway.hits("/api/orders", "order_api-1", "order_api-2") == before


def test_preflight_from_another_origin_is_refused(gateway: Gateway) -> None:
    answer = gateway.request(
        "OPTIONS",
        "/api/orders",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert answer.status == 403
    assert answer.header("Access-Control-Allow-Origin") is None
    assert answer.header("Access-Control-Allow-Methods") is None
    assert answer.json()["status"] == 403
    assert_security_headers(answer)


def test_cors_headers_only_for_allowed_origins(gateway: Gateway) -> None:
    allowed = gateway.request("GET", "/api/users", headers={"Origin": "http://localhost:3000"})
    assert allowed.header("Access-Control-Allow-Origin") == "http://localhost:3000"
    assert "X-Request-ID" in (allowed.header("Access-Control-Expose-Headers") or "")
    assert allowed.header("Access-Control-Allow-Methods") is None  # preflight only
    other = gateway.request("GET", "/api/users", headers={"Origin": "https://evil.example"})
    assert other.status == 200
    assert other.header("Access-Control-Allow-Origin") is None


# --- limits ------------------------------------------------------------------------------------


def test_body_over_64_kib_is_refused_before_the_service(gateway: Gateway) -> None:
    headers = {"Content-Type": "application/json"}
    fits = gateway.request("POST", "/api/users/limit", headers=headers, body=b"x" * 65536)
    assert fits.status == 200
    assert fits.json()["body_bytes"] == 65536
    before = gateway.hits("/api/users/limit", "user_api-1", "user_api-2")
    answer = gateway.request("POST", "/api/users/limit", headers=headers, body=b"x" * 65537)
    assert_gateway_problem(answer, 413, "/api/users/limit")
    assert gateway.hits("/api/users/limit", "user_api-1", "user_api-2") == before


def test_login_burst_gets_429_not_503(gateway: Gateway) -> None:
    body = b'{"email":"a@example.com","password":"x"}'
    statuses = [
        gateway.request(
            "POST", "/api/auth/login", headers={"Content-Type": "application/json"}, body=body
        ).status
        for _ in range(16)
    ]
    # rate 30r/m with a burst of 10: eleven get through at once, the rest are turned away.
    assert statuses[:11] == [200] * 11
    assert set(statuses[11:]) == {429}
    limited = gateway.request(
        "POST", "/api/auth/login", headers={"Content-Type": "application/json"}, body=body
    )
    assert_gateway_problem(limited, 429, "/api/auth/login")
    assert limited.json()["title"] == "Too Many Requests"
    # 30 requests a minute: the next one is let through two seconds later.
    assert limited.header("Retry-After") == "2"
    assert_security_headers(limited)
    assert limited.headers.get_all("Cache-Control") == ["no-store"]
    rejected = gateway.matching_log_entries(lambda e: e["gateway.rate_limit"] == "REJECTED", at_least=6)
    assert len(rejected) >= 6
    # The login zone is its own: other routes still answer.
    assert gateway.request("GET", "/api/users").status == 200


# --- several instances -------------------------------------------------------------------------


def test_upstream_connections_are_kept_alive(gateway: Gateway) -> None:
    before = gateway.stats("notifier-1")["connections"]
    for _ in range(40):
        assert gateway.request("GET", "/api/notifications").status == 200
    # Without keepalive (HTTP/1.1 and an empty Connection header) this would be 40 more.
    assert gateway.stats("notifier-1")["connections"] - before <= 4


def test_post_that_reached_an_instance_is_not_resent(gateway: Gateway) -> None:
    instances = ("order_api-1", "order_api-2")
    before = gateway.hits("/api/orders/abort", *instances)
    answer = gateway.request(
        "POST", "/api/orders/abort", headers={"Content-Type": "application/json"}, body=b"{}"
    )
    assert answer.status == 502
    assert answer.json()["title"] == "Bad Gateway"
    assert_security_headers(answer)
    assert gateway.hits("/api/orders/abort", *instances) - before == 1


def test_get_that_failed_on_one_instance_is_retried_on_another(gateway: Gateway) -> None:
    instances = ("order_api-1", "order_api-2")
    before = {name: gateway.hits("/api/orders/abort", name) for name in instances}
    answer = gateway.request("GET", "/api/orders/abort")
    assert answer.status == 502  # both instances abort this path
    assert all(gateway.hits("/api/orders/abort", name) - before[name] == 1 for name in instances)


def test_killed_instance_fails_no_get(gateway: Gateway) -> None:
    served = {gateway.request("GET", "/api/users").json()["service"] for _ in range(6)}
    assert served == {"user_api"}
    first = gateway.stats("user_api-1")["hits"].get("GET /api/users", 0)
    second = gateway.stats("user_api-2")["hits"].get("GET /api/users", 0)
    assert first > 0
    assert second > 0  # both instances take traffic

    gateway.processes["user_api-2"].kill()
    gateway.processes["user_api-2"].wait()
    statuses = [gateway.request("GET", f"/api/users/{n}").status for n in range(30)]
    assert statuses == [200] * 30
    # A POST never reached the dead instance (connection refused), so it is safe to send on.
    post = gateway.request(
        "POST", "/api/auth/register", headers={"Content-Type": "application/json"}, body=b"{}"
    )
    assert post.status == 200


# --- HTTPS redirect (a gateway of its own) ------------------------------------------------------


def test_https_redirect_keeps_health_on_plain_http(nginx_bin: str, tmp_path: Path) -> None:
    ports = {"http": free_port(), "https": free_port(), "status": free_port()}
    upstream = {name: 1 for name in ("user_api-1", "user_api-2", "order_api-1", "order_api-2", "notifier-1")}
    cfg = dataclasses.replace(_render_host_config(tmp_path, upstream, ports), https_redirect=True)
    nginx = _start_nginx(nginx_bin, tmp_path, cfg)
    try:
        wait_for_port(ports["http"], nginx, "nginx")
        gw = Gateway(ports["http"], ports["https"], ports["status"], {}, {}, tmp_path, Path(cfg.tls_cert))
        redirect = gw.request("GET", "/api/users?limit=1", headers={"Host": "api.example.com"})
        assert redirect.status == 308
        assert redirect.header("Location") == f"https://api.example.com:{ports['https']}/api/users?limit=1"
        assert gw.request("GET", "/health").status == 200
    finally:
        stop_process(nginx, signal.SIGQUIT)


def test_tls_offers_http2(gateway: Gateway) -> None:
    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", gateway.https_port), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
