"""What a gateway configuration is made of: the settings nginx is rendered from, and where its files are.

``environment.py`` picks a ``GatewayConfig`` from the environment per mode; ``render.py``
validates it and writes nginx's files. Both build on this module, which imports neither.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.errors import ServiceError

ROOT = Path(__file__).resolve().parent.parent
# The API console's own page and initializer; Swagger UI's files come from swagger-ui-py.
DOCS_SITE = Path(__file__).resolve().parent / "docs"
DOCS_PAGE_FILES = ("index.html", "swagger-initializer.js")
SWAGGER_UI_PACKAGE = "swagger_ui"
# The Swagger UI files the page loads: nginx serves these and no other file of the package.
SWAGGER_UI_ASSETS = (
    "swagger-ui.css",
    "index.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
# Compose mode: the gateway container mounts the gateway-conf volume here (docker-compose.yml).
COMPOSE_CONF_DIR = "/etc/gateway/conf"
SERVICES = ("user_api", "order_api", "notifier")

Mode = Literal["host", "compose", "kubernetes"]
Http2 = Literal["directive", "listen", "off"]


class RenderError(ServiceError, ValueError):
    """The parameters do not describe a safe, valid gateway configuration."""


@dataclass(frozen=True)
class GatewayConfig:
    mode: Mode
    # service -> "host:port" of each instance, load-balanced in that order
    upstreams: Mapping[str, Sequence[str]]
    tls_cert: str
    tls_key: str
    pid_file: str
    error_log: str
    access_log: str  # a path, with buffering parameters if wanted ("file buffer=32k flush=1s")
    temp_dir: str
    # The API console: the folder with index.html, and the folder with Swagger UI's files.
    docs_dir: str
    swagger_ui_dir: str
    http_port: int = 80
    https_port: int = 443
    # The HTTPS port clients see (differs from https_port behind compose's port publishing).
    public_https_port: int = 443
    listen_address: str = ""  # "" = every address
    status_listen: str = "127.0.0.1:8080"
    status_allow: Sequence[str] = ("127.0.0.1",)
    worker_user: str | None = None
    worker_processes: str = "auto"
    resolver: str | None = None  # set: upstream names are re-resolved ("resolve", nginx >= 1.27.3)
    cors_origins: Sequence[str] = ()
    trusted_proxies: Sequence[str] = ()
    https_redirect: bool = False
    http2: Http2 = "off"
    api_rate: str = "100r/s"
    api_burst: int = 200
    login_rate: str = "30r/m"
    login_burst: int = 10
    max_fails: int = 3
    fail_timeout_s: int = 10
    keepalive: int = 32


def swagger_ui_static() -> Path:
    """Swagger UI's files in the installed swagger-ui-py package (not imported: only found)."""
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise RenderError("the API console needs the swagger-ui-py package: pip install -e . (setup.cfg)")
    static = Path(folders[0]) / "static"
    missing = [name for name in SWAGGER_UI_ASSETS if not (static / name).is_file()]
    if missing:
        raise RenderError(f"swagger-ui-py at {static} lacks {', '.join(missing)}")
    return static
