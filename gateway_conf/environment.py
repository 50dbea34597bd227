"""Gateway settings per mode (host or compose), read from the environment (GATEWAY_* variables).

The values are validated when rendered (``render._validate``); this module only picks them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway_conf.config import (
    COMPOSE_CONF_DIR,
    DOCS_SITE,
    ROOT,
    SERVICES,
    GatewayConfig,
    Http2,
    Mode,
    RenderError,
    swagger_ui_static,
)


def _split(value: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", value.strip()) if item]


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise RenderError(f"{name}: {raw!r} is not a number") from None


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise RenderError(f"{name}: {raw!r} is not true or false")


def _ports(env: Mapping[str, str]) -> dict[str, int]:
    """The port each API listens on (its first instance in host mode)."""
    return {
        "user_api": _env_int(env, "USER_API_PORT", 8081),
        "order_api": _env_int(env, "ORDER_API_PORT", 8082),
        "notifier": _env_int(env, "NOTIFIER_PORT", 8083),
    }


def _host_upstreams(env: Mapping[str, str]) -> dict[str, list[str]]:
    # The instances `scripts/deploy.sh local` starts, on the ports it starts them with: the second
    # instance's port is a setting of its own (USER_API_PORT_2, ORDER_API_PORT_2; .env.example).
    ports = _ports(env)
    second = {
        "user_api": _env_int(env, "USER_API_PORT_2", 8091),
        "order_api": _env_int(env, "ORDER_API_PORT_2", 8092),
    }
    defaults = {
        name: ",".join(f"127.0.0.1:{port}" for port in (ports[name], second.get(name)) if port)
        for name in SERVICES
    }
    return _upstreams(env, defaults)


# The names the network of each mode knows the APIs by: compose's services and, in
# deploy/k8s/base, Kubernetes Services (a ClusterIP is a stable virtual address in front of every
# ready pod, so nginx resolves each name once at start and needs no resolver of its own).
COMPOSE_HOSTS = {"user_api": "user-service", "order_api": "order-service", "notifier": "notification-service"}
KUBERNETES_HOSTS = {"user_api": "user-api", "order_api": "order-api", "notifier": "notifier"}


def _named_upstreams(env: Mapping[str, str], hosts: Mapping[str, str]) -> dict[str, list[str]]:
    ports = _ports(env)
    return _upstreams(env, {name: f"{hosts[name]}:{ports[name]}" for name in SERVICES})


def _upstreams(env: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, list[str]]:
    # Each variable spelled out, so that a search for it (tests/config/test_env_contract.py) finds this.
    given = {
        "user_api": env.get("GATEWAY_USER_API_UPSTREAMS", ""),
        "order_api": env.get("GATEWAY_ORDER_API_UPSTREAMS", ""),
        "notifier": env.get("GATEWAY_NOTIFIER_UPSTREAMS", ""),
    }
    return {name: _split(given[name] or defaults[name]) for name in SERVICES}


def detect_http2(nginx: str | None = None) -> Http2:
    """'directive' on nginx >= 1.25.1 (``http2 on``), 'listen' before, 'off' without nginx."""
    nginx = nginx or shutil.which("nginx") or "/usr/sbin/nginx"
    try:
        # S603: the nginx on PATH with a fixed argument, as gateway.sh itself runs it.
        out = subprocess.run(  # noqa: S603
            [nginx, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stderr
    except OSError:
        return "off"
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        return "off"
    version = tuple(int(part) for part in match.groups())
    return "directive" if version >= (1, 25, 1) else "listen"


def config_from_env(
    mode: Mode, env: Mapping[str, str], *, root: Path = ROOT, worker_user: str | None = None
) -> GatewayConfig:
    """The configuration ``scripts/gateway.sh`` (host) or the compose file (compose) asks for."""
    common: dict[str, Any] = {
        "cors_origins": _split(env.get("CORS_ALLOWED_ORIGINS", "")),
        "trusted_proxies": _split(env.get("GATEWAY_TRUSTED_PROXIES", "")),
        "https_redirect": _env_bool(env, "GATEWAY_HTTPS_REDIRECT"),
        "api_rate": env.get("GATEWAY_API_RATE", "").strip() or "100r/s",
        "api_burst": _env_int(env, "GATEWAY_API_BURST", 200),
        "login_rate": env.get("GATEWAY_LOGIN_RATE", "").strip() or "30r/m",
        "login_burst": _env_int(env, "GATEWAY_LOGIN_BURST", 10),
    }
    if mode == "host":
        var = root / "var"
        # GATEWAY_PREFIX moves nginx's own files (pid, temp, development certificate) elsewhere.
        prefix = Path(env.get("GATEWAY_PREFIX", "") or var / "gateway")
        log_dir = Path(env.get("LOG_DIR", "") or var / "log")
        https_port = _env_int(env, "GATEWAY_HTTPS_PORT", 443)
        return GatewayConfig(
            mode="host",
            upstreams=_host_upstreams(env),
            tls_cert=env.get("GATEWAY_TLS_CERT", "") or str(prefix / "tls/tls.crt"),
            tls_key=env.get("GATEWAY_TLS_KEY", "") or str(prefix / "tls/tls.key"),
            pid_file=str(prefix / "nginx.pid"),
            # scripts/gateway.sh runs nginx under supervisord, which writes (and rotates) the
            # logs: there they are /dev/stdout and /dev/stderr.
            error_log=env.get("GATEWAY_ERROR_LOG", "").strip() or str(log_dir / "gateway.error.log"),
            access_log=env.get("GATEWAY_ACCESS_LOG", "").strip()
            or f"{log_dir / 'gateway.access.log'} buffer=32k flush=1s",
            temp_dir=str(prefix / "temp"),
            docs_dir=str(DOCS_SITE),
            swagger_ui_dir=str(swagger_ui_static()),
            http_port=_env_int(env, "GATEWAY_HTTP_PORT", 80),
            https_port=https_port,
            public_https_port=https_port,
            listen_address=env.get("GATEWAY_LISTEN_ADDRESS", "").strip(),
            status_listen=f"127.0.0.1:{_env_int(env, 'GATEWAY_STATUS_PORT', 8080)}",
            status_allow=("127.0.0.1",),
            worker_user=worker_user,
            http2=detect_http2(),
            **common,
        )
    if mode == "kubernetes":
        return _kubernetes_config(env, common)
    # compose: nginx listens on 80/443 inside its container; GATEWAY_HTTP(S)_PORT are the
    # published ports, which only matter for the redirect's target.
    return GatewayConfig(
        mode="compose",
        upstreams=_named_upstreams(env, COMPOSE_HOSTS),
        tls_cert="/etc/gateway/tls/tls.crt",
        tls_key="/etc/gateway/tls/tls.key",
        pid_file="/var/run/nginx.pid",
        error_log="/dev/stderr",
        access_log="/dev/stdout",
        temp_dir="/var/cache/nginx",
        docs_dir=f"{COMPOSE_CONF_DIR}/docs",
        swagger_ui_dir=f"{COMPOSE_CONF_DIR}/docs/swagger-ui",
        public_https_port=_env_int(env, "GATEWAY_HTTPS_PORT", 443),
        status_listen="8080",
        # Prometheus' nginx exporter reaches it over the compose network; nothing publishes it.
        status_allow=("127.0.0.1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
        worker_user="nginx",
        # Docker's embedded DNS: replicas that come and go are picked up without a reload.
        resolver="127.0.0.11",
        http2="directive",
        **common,
    )


def _kubernetes_config(env: Mapping[str, str], common: Mapping[str, Any]) -> GatewayConfig:
    """deploy/k8s: rendered by the gateway pod's init container into an emptyDir.

    nginx runs as its image's unprivileged user on a read-only root filesystem, so it listens on
    8080/8443 (the Service maps 80/443 to them) and writes only under /tmp (an emptyDir). The
    status server is for the nginx-exporter sidecar in the same pod, hence loopback only.
    """
    return GatewayConfig(
        mode="kubernetes",
        upstreams=_named_upstreams(env, KUBERNETES_HOSTS),
        tls_cert="/etc/gateway/tls/tls.crt",
        tls_key="/etc/gateway/tls/tls.key",
        pid_file="/tmp/nginx/nginx.pid",  # noqa: S108 - an emptyDir of the pod's own
        error_log="/dev/stderr",
        access_log="/dev/stdout",
        temp_dir="/tmp/nginx",  # noqa: S108 - an emptyDir of the pod's own
        docs_dir=f"{COMPOSE_CONF_DIR}/docs",
        swagger_ui_dir=f"{COMPOSE_CONF_DIR}/docs/swagger-ui",
        http_port=8080,
        https_port=8443,
        public_https_port=_env_int(env, "GATEWAY_HTTPS_PORT", 443),
        status_listen="127.0.0.1:8081",
        status_allow=("127.0.0.1",),
        worker_user=None,
        http2="directive",
        **common,
    )
