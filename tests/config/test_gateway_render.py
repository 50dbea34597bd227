"""The renderer: what it refuses, what each mode produces, and that nginx accepts the result."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from gateway_conf import config, problems, render
from gateway_conf.config import GatewayConfig, RenderError
from gateway_conf.devcert import ensure_dev_certificate
from gateway_conf.environment import config_from_env, detect_http2
from gateway_conf.render import make_host_folders, write
from tests.config.conftest import ROOT
from tests.net import free_port


def host_config(tmp: Path, **env: str) -> GatewayConfig:
    return config_from_env("host", {"GATEWAY_PREFIX": str(tmp / "gw"), "LOG_DIR": str(tmp / "log"), **env})


def nginx_test(nginx: str, cfg: GatewayConfig, tmp: Path) -> subprocess.CompletedProcess[str]:
    conf = write(cfg, tmp / "conf")
    return subprocess.run(
        [nginx, "-t", "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )


# --- host mode ---------------------------------------------------------------------------------


def test_host_mode_defaults_follow_deploy_sh(tmp_path: Path) -> None:
    cfg = host_config(tmp_path)
    assert cfg.upstreams == {
        "user_api": ["127.0.0.1:8081", "127.0.0.1:8091"],
        "order_api": ["127.0.0.1:8082", "127.0.0.1:8092"],
        "notifier": ["127.0.0.1:8083"],
    }
    assert (cfg.http_port, cfg.https_port, cfg.status_listen) == (80, 443, "127.0.0.1:8080")


def test_host_mode_instances_and_ports_come_from_the_environment(tmp_path: Path) -> None:
    cfg = host_config(
        tmp_path,
        USER_API_PORT="9001",
        USER_API_PORT_2="9002",
        GATEWAY_ORDER_API_UPSTREAMS="127.0.0.1:7001 127.0.0.1:7002,127.0.0.1:7003",
        GATEWAY_HTTP_PORT="8000",
        GATEWAY_HTTPS_PORT="8443",
    )
    conf = render.render(cfg)["nginx.conf"]
    assert "server 127.0.0.1:9001 max_fails=3 fail_timeout=10s;" in conf
    assert "server 127.0.0.1:9002 max_fails=3 fail_timeout=10s;" in conf
    for port in (7001, 7002, 7003):
        assert f"server 127.0.0.1:{port} max_fails=3" in conf
    assert re.search(r"listen 8000;\n\s+listen 8443 ssl", conf)


@pytest.mark.parametrize(
    "ports",
    [{}, {"USER_API_PORT": "9001", "ORDER_API_PORT": "9003"}, {"USER_API_PORT_2": "9005"}],
    ids=["defaults", "first-instances-moved", "second-instance-moved"],
)
def test_host_mode_upstreams_are_the_instances_deploy_sh_starts(
    tmp_path: Path, ports: dict[str, str]
) -> None:
    # The port of each instance is decided in one place (its variable, defaulted as in
    # .env.example); the gateway must route to exactly the processes deploy.sh local runs.
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_PORT", "_API_PORT_2"))}
    table = subprocess.run(
        ["bash", "-c", ". scripts/deploy.sh && process_table"],
        cwd=ROOT,
        env={**env, **ports},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    started = {
        name: url.removeprefix("http://").split("/")[0]
        for name, url, _ in (line.split("|", 2) for line in table.splitlines())
    }
    cfg = host_config(tmp_path, **ports)
    assert cfg.upstreams["user_api"] == [started["user_api_1"], started["user_api_2"]]
    assert cfg.upstreams["order_api"] == [started["order_api_1"], started["order_api_2"]]


def test_host_mode_passes_nginx_t(nginx_bin: str, tmp_path: Path) -> None:
    cfg = dataclasses.replace(host_config(tmp_path), http2=detect_http2(nginx_bin))
    make_host_folders(cfg)
    ensure_dev_certificate(Path(cfg.tls_cert), Path(cfg.tls_key), server_name="localhost", app_env="test")
    result = nginx_test(nginx_bin, cfg, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr


def test_every_upstream_keeps_connections_alive(tmp_path: Path) -> None:
    conf = render.render(host_config(tmp_path))["nginx.conf"]
    blocks = re.findall(r"upstream (\w+) \{(.*?)\}", conf, flags=re.S)
    assert {name for name, _ in blocks} == {"user_api", "order_api", "notifier"}
    for _, body in blocks:
        assert "keepalive 32;" in body
        assert "zone upstream_" in body


# --- compose mode ------------------------------------------------------------------------------


def compose_config(**env: str) -> GatewayConfig:
    return config_from_env("compose", env)


def test_compose_mode_addresses_services_by_name_and_re_resolves_them() -> None:
    conf = render.render(compose_config())["nginx.conf"]
    assert "server user-service:8081 resolve max_fails=3" in conf
    assert "server order-service:8082 resolve max_fails=3" in conf
    assert "server notification-service:8083 resolve max_fails=3" in conf
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in conf
    assert "http2 on;" in conf
    assert "user nginx;" in conf
    assert "access_log /dev/stdout gateway_json;" in conf
    assert re.search(r"listen 80;\n\s+listen 443 ssl;", conf)
    assert "listen 8080;" in conf


def test_compose_mode_redirects_to_the_published_https_port() -> None:
    conf = render.render(compose_config(GATEWAY_HTTPS_PORT="8443", GATEWAY_HTTPS_REDIRECT="true"))[
        "nginx.conf"
    ]
    assert "return 308 https://$host:8443$request_uri;" in conf
    assert '"~^http\\|" 1;' in conf


def test_compose_mode_passes_nginx_t(nginx_bin: str, tmp_path: Path) -> None:
    """The compose rendering, with what this host cannot provide swapped for local stand-ins.

    Swapped: the upstream host names (they exist only on the compose network) for 127.0.0.1 with
    the same ports, which also drops `resolve` and the resolver (Docker's DNS at 127.0.0.11; and
    `resolve` needs nginx >= 1.27.3, the image has 1.28, Debian 12 has 1.22); the worker user
    `nginx` (the image's); the pid, temp and certificate paths (the container's); and the HTTP/2
    syntax (`http2 on` needs nginx >= 1.25.1). Everything else is the compose rendering as is:
    routes, headers, limits, CORS, the status server's allow-list, logging to stdout/stderr.
    The test above pins what was swapped.
    """
    real = compose_config(CORS_ALLOWED_ORIGINS="https://app.example.com", GATEWAY_HTTPS_REDIRECT="true")
    stand_in = dataclasses.replace(
        real,
        upstreams={
            name: [re.sub(r"^[^:]+:", "127.0.0.1:", server) for server in servers]
            for name, servers in real.upstreams.items()
        },
        resolver=None,
        worker_user=None,
        pid_file=str(tmp_path / "nginx.pid"),
        temp_dir=str(tmp_path / "temp"),
        tls_cert=str(tmp_path / "tls/tls.crt"),
        tls_key=str(tmp_path / "tls/tls.key"),
        http2=detect_http2(nginx_bin),
    )
    (tmp_path / "temp").mkdir()
    ensure_dev_certificate(
        Path(stand_in.tls_cert), Path(stand_in.tls_key), server_name="localhost", app_env="test"
    )
    result = nginx_test(nginx_bin, stand_in, tmp_path)
    assert result.returncode == 0, result.stderr


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CORS_ALLOWED_ORIGINS": 'https://a.example"; include /etc/shadow; "'}, "CORS origin"),
        ({"CORS_ALLOWED_ORIGINS": "*"}, "wildcards are not supported"),
        ({"CORS_ALLOWED_ORIGINS": "https://a.example/path"}, "CORS origin"),
        ({"GATEWAY_USER_API_UPSTREAMS": "127.0.0.1:8081;include"}, "not host:port"),
        ({"GATEWAY_USER_API_UPSTREAMS": "127.0.0.1:70000"}, "not a TCP port"),
        ({"GATEWAY_USER_API_UPSTREAMS": "127.0.0.1"}, "not host:port"),
        ({"GATEWAY_API_RATE": "100r/h"}, "API rate"),
        ({"GATEWAY_LOGIN_RATE": "5r/m; deny all"}, "login rate"),
        ({"GATEWAY_HTTP_PORT": "443"}, "must differ"),
        ({"GATEWAY_HTTP_PORT": "eighty"}, "not a number"),
        ({"GATEWAY_TLS_CERT": "/etc/ssl/my cert.pem"}, "not a plain path"),
        ({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8;"}, "not an IP address"),
        ({"GATEWAY_HTTPS_REDIRECT": "sometimes"}, "not true or false"),
    ],
)
def test_unsafe_or_malformed_values_are_refused(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        render.render(host_config(tmp_path, **env))


def test_every_service_needs_an_instance(tmp_path: Path) -> None:
    cfg = dataclasses.replace(host_config(tmp_path), upstreams={"user_api": ["127.0.0.1:1"], "order_api": []})
    with pytest.raises(RenderError, match="order_api, notifier"):
        render.render(cfg)


def test_a_template_placeholder_without_a_value_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "nginx.conf").write_text("events {}\nhttp { {{ no_such_value }} }\n")
    monkeypatch.setattr(render, "TEMPLATES", templates)
    with pytest.raises(RenderError, match="no_such_value"):
        render.render(host_config(tmp_path))


def test_trusted_proxies_make_nginx_believe_their_forwarded_for(tmp_path: Path) -> None:
    conf = render.render(host_config(tmp_path, GATEWAY_TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.7"))["nginx.conf"]
    assert "set_real_ip_from 10.0.0.0/8;" in conf
    assert "set_real_ip_from 192.0.2.7;" in conf
    assert "real_ip_header X-Forwarded-For;" in conf
    assert "set_real_ip_from" not in render.render(host_config(tmp_path))["nginx.conf"]


def test_cli_reports_a_bad_variable_by_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway_conf.render", "--mode", "host", "--out", str(tmp_path / "conf")],
        cwd=ROOT,
        env={**os.environ, "GATEWAY_HTTPS_PORT": "many", "GATEWAY_PREFIX": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "GATEWAY_HTTPS_PORT" in result.stderr
    assert not (tmp_path / "conf/nginx.conf").exists()


# --- the development certificate ---------------------------------------------------------------


def test_dev_certificate_is_created_once_with_a_private_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls/tls.crt", tmp_path / "tls/tls.key"
    assert ensure_dev_certificate(cert, key, server_name="gw.test", app_env="development")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"gw.test", "localhost"}
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    first = cert.read_bytes()
    assert not ensure_dev_certificate(cert, key, server_name="gw.test", app_env="development")
    assert cert.read_bytes() == first


@pytest.mark.parametrize("app_env", ["staging", "production"])
def test_no_self_signed_certificate_outside_development(tmp_path: Path, app_env: str) -> None:
    with pytest.raises(FileNotFoundError, match="needs a real one mounted"):
        ensure_dev_certificate(
            tmp_path / "c.crt", tmp_path / "c.key", server_name="localhost", app_env=app_env
        )
    assert not (tmp_path / "c.key").exists()


# --- scripts/gateway.sh ------------------------------------------------------------------------


def run_gateway_sh(command: str, tmp: Path, ports: dict[str, int]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GATEWAY_PREFIX": str(tmp / "gw"),
        "LOG_DIR": str(tmp / "log"),
        # A supervisord of the test's own: never the running stack's (var/run/supervisor.sock).
        "RUN_DIR": str(tmp / "run"),
        "SUPERVISOR_DIR": str(tmp / "supervisor"),
        "GATEWAY_HTTP_PORT": str(ports["http"]),
        "GATEWAY_HTTPS_PORT": str(ports["https"]),
        "GATEWAY_STATUS_PORT": str(ports["status"]),
        "GATEWAY_LISTEN_ADDRESS": "127.0.0.1",
        # Ports nothing listens on, whatever else runs on this machine.
        "GATEWAY_USER_API_UPSTREAMS": f"127.0.0.1:{ports['dead']}",
        "GATEWAY_ORDER_API_UPSTREAMS": f"127.0.0.1:{ports['dead']}",
        "GATEWAY_NOTIFIER_UPSTREAMS": f"127.0.0.1:{ports['dead']}",
    }
    return subprocess.run(
        ["bash", "scripts/gateway.sh", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_gateway_sh_starts_reloads_reports_and_stops(nginx_bin: str, tmp_path: Path) -> None:
    ports = {"http": free_port(), "https": free_port(), "status": free_port(), "dead": free_port()}
    try:
        started = run_gateway_sh("start", tmp_path, ports)
        assert started.returncode == 0, started.stdout + started.stderr
        pid = (tmp_path / "gw/nginx.pid").read_text().strip()
        assert (tmp_path / "gw/tls/tls.crt").exists()

        reloaded = run_gateway_sh("start", tmp_path, ports)
        assert reloaded.returncode == 0, reloaded.stderr
        assert "reloaded" in reloaded.stdout
        assert (tmp_path / "gw/nginx.pid").read_text().strip() == pid

        # supervisord says STARTING until the program has stayed up for its startsecs.
        deadline = time.monotonic() + 30
        status = run_gateway_sh("status", tmp_path, ports)
        while status.returncode != 0 and "STARTING" in status.stdout and time.monotonic() < deadline:
            time.sleep(0.5)
            status = run_gateway_sh("status", tmp_path, ports)
        assert status.returncode == 0, status.stdout
        assert f"running (pid {pid}, supervised)" in status.stdout
        # Nothing listens behind it here: the services' health is reported as failing.
        assert "FAILING" in status.stdout
    finally:
        stopped = run_gateway_sh("stop", tmp_path, ports)
        # gateway.sh started a supervisord of the test's own for nginx; it goes with the test.
        subprocess.run(
            ["supervisorctl", "-c", str(tmp_path / "supervisor/supervisord.conf"), "shutdown"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "gw/nginx.pid").exists()
    assert run_gateway_sh("status", tmp_path, ports).returncode == 1
    assert (tmp_path / "log/gateway.access.log").exists()


def test_gateway_sh_test_rejects_a_bad_environment(nginx_bin: str, tmp_path: Path) -> None:
    ports = {"http": free_port(), "https": free_port(), "status": free_port(), "dead": free_port()}
    ok = run_gateway_sh("test", tmp_path, ports)
    assert ok.returncode == 0, ok.stderr
    assert "nginx accepts" in ok.stdout
    bad = run_gateway_sh("test", tmp_path, {**ports, "https": ports["http"]})
    assert bad.returncode != 0
    assert "must differ" in bad.stderr


# --- the gateway's own errors ------------------------------------------------------------------


def test_every_gateway_error_is_a_problem_with_instance_and_request_id(tmp_path: Path) -> None:
    errors = render.render(host_config(tmp_path))["snippets/errors.conf"]
    for status in (404, 405, 413, 429, 502, 503, 504):
        block = re.search(rf"location @problem_{status} \{{(.*?)\n\}}", errors, re.S)
        assert block, status
        body = block.group(1)
        assert "default_type application/problem+json;" in body
        assert f'"status":{status},' in body
        assert '"instance":"$gw_problem_instance","request_id":"$gw_request_id"' in body
    assert "add_header Allow $gw_allow always;" in errors.split("@problem_405")[2]
    assert "add_header Retry-After $gw_retry_after always;" in errors.split("@problem_429")[2]


@pytest.mark.parametrize(("rate", "seconds"), [("100r/s", 1), ("30r/m", 2), ("1r/m", 60), ("7r/m", 9)])
def test_retry_after_is_when_the_zone_lets_the_next_request_through(rate: str, seconds: int) -> None:
    assert problems.retry_after(rate) == seconds


def test_the_allow_of_a_405_lists_each_documented_operation(tmp_path: Path) -> None:
    conf = render.render(host_config(tmp_path))["nginx.conf"]
    allow = dict(re.findall(r'^\s+"~(\^/api/[^"]+)" "([A-Z, ]+)";$', conf, re.M))
    for package in config.SERVICES:
        document = yaml.safe_load((ROOT / package / "openapi.yaml").read_text())
        for route, item in document["paths"].items():
            if not route.startswith("/api/"):
                continue
            methods = {m.upper() for m in item if m != "parameters"} | ({"HEAD"} if "get" in item else set())
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", route) + "$"
            assert allow[pattern] == ", ".join(sorted(methods)), route
