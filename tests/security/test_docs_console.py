"""The API console at /docs as the gateway serves it: its own headers, its own files, nothing else.

A real nginx runs each rendering (host mode, and compose mode with the files its renderer
copies). The console in a browser against a running stack is tests/e2e/test_docs_browser.py.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_conf import config, render
from gateway_conf.config import GatewayConfig
from gateway_conf.devcert import ensure_dev_certificate
from gateway_conf.environment import config_from_env, detect_http2
from gateway_conf.render import make_host_folders, publish_docs, write
from tests.net import free_port, stop_process, wait_for_port

DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


@dataclasses.dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def get(port: int, path: str) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def _serve(nginx: str, cfg: GatewayConfig, tmp: Path) -> Iterator[int]:
    """nginx in the foreground with ``cfg``, its upstreams dead; yields its HTTP port."""
    port = free_port()
    cfg = dataclasses.replace(
        cfg,
        http_port=port,
        https_port=free_port(),
        status_listen=f"127.0.0.1:{free_port()}",
        listen_address="127.0.0.1",
        upstreams={name: [f"127.0.0.1:{free_port()}"] for name in config.SERVICES},
        resolver=None,
        # pytest's temporary folders are private to their owner: as root, workers run as root too
        # (they would be 'nobody' otherwise), so that compose mode's copied files can be read.
        worker_user="root" if os.geteuid() == 0 else None,
        pid_file=str(tmp / "nginx.pid"),
        temp_dir=str(tmp / "temp"),
        error_log=str(tmp / "error.log"),
        access_log=str(tmp / "access.log"),
        tls_cert=str(tmp / "tls/tls.crt"),
        tls_key=str(tmp / "tls/tls.key"),
        http2=detect_http2(nginx),
    )
    make_host_folders(cfg)
    ensure_dev_certificate(Path(cfg.tls_cert), Path(cfg.tls_key), server_name="localhost", app_env="test")
    conf = write(cfg, tmp / "conf")
    args = ["-p", f"{tmp}/", "-c", str(conf), "-e", cfg.error_log]
    check = subprocess.run([nginx, *args, "-t", "-q"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([nginx, *args, "-g", "daemon off;"])
    try:
        wait_for_port(port, process, "nginx")
        yield port
    finally:
        stop_process(process, signal.SIGQUIT)


@pytest.fixture(scope="module")
def host_gateway(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("host")
    yield from _serve(nginx_bin, config_from_env("host", {"GATEWAY_PREFIX": str(tmp)}), tmp)


@pytest.fixture(scope="module")
def compose_gateway(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The compose rendering, its /etc/gateway/conf/docs swapped for a folder of the test's own."""
    tmp = tmp_path_factory.mktemp("compose")
    real = config_from_env("compose", {})
    assert real.docs_dir == "/etc/gateway/conf/docs"
    assert real.swagger_ui_dir == "/etc/gateway/conf/docs/swagger-ui"
    cfg = dataclasses.replace(real, docs_dir=str(tmp / "docs"), swagger_ui_dir=str(tmp / "docs/swagger-ui"))
    publish_docs(cfg)
    yield from _serve(nginx_bin, cfg, tmp)


# --- where the files come from ------------------------------------------------------------------


def test_host_mode_serves_swagger_ui_from_the_virtualenv_and_the_page_from_the_repository() -> None:
    cfg = config_from_env("host", {})
    assert Path(cfg.swagger_ui_dir).is_relative_to(sys.prefix)
    assert (Path(cfg.swagger_ui_dir) / "swagger-ui-bundle.js").is_file()
    assert Path(cfg.docs_dir) == config.DOCS_SITE
    conf = render.render(cfg)["nginx.conf"]
    assert f"alias {cfg.swagger_ui_dir}/$1;" in conf
    assert f"alias {config.DOCS_SITE}/;" in conf


def test_host_mode_publishing_writes_nothing(tmp_path: Path) -> None:
    cfg = config_from_env("host", {"GATEWAY_PREFIX": str(tmp_path)})
    before = {p: p.stat().st_mtime_ns for p in config.DOCS_SITE.iterdir()}
    publish_docs(cfg)
    assert {p: p.stat().st_mtime_ns for p in config.DOCS_SITE.iterdir()} == before


def test_compose_mode_copies_the_console_next_to_its_configuration(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        config_from_env("compose", {}), docs_dir=str(tmp_path / "d"), swagger_ui_dir=str(tmp_path / "d/s")
    )
    publish_docs(cfg)
    for name in config.DOCS_PAGE_FILES:
        assert (tmp_path / "d" / name).read_bytes() == (config.DOCS_SITE / name).read_bytes()
    static = config.swagger_ui_static()
    for name in config.SWAGGER_UI_ASSETS:
        assert (tmp_path / "d/s" / name).read_bytes() == (static / name).read_bytes()
    # Only the files the page loads: not the package's editor bundles or source maps.
    assert sorted(p.name for p in (tmp_path / "d/s").iterdir()) == sorted(config.SWAGGER_UI_ASSETS)


def test_the_page_loads_only_what_the_gateway_serves() -> None:
    page = (config.DOCS_SITE / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references
    assert all(not re.match(r"^([a-z]+:)?//", ref) for ref in references), references
    assert "<script>" not in page  # no inline script: the CSP would refuse it
    loaded = {ref.removeprefix("swagger-ui/") for ref in references if ref.startswith("swagger-ui/")}
    assert loaded <= set(config.SWAGGER_UI_ASSETS)


# --- what nginx answers, in both modes ---------------------------------------------------------


@pytest.fixture(params=["host", "compose"])
def gateway(request: pytest.FixtureRequest) -> int:
    port: int = request.getfixturevalue(f"{request.param}_gateway")
    return port


def test_docs_redirects_to_the_console_with_a_relative_location(gateway: int) -> None:
    answer = get(gateway, "/docs")
    assert answer.status == 301
    assert answer.headers["Location"] == "/docs/"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/docs/", "text/html; charset=utf-8"),
        ("/docs/swagger-initializer.js", "text/javascript; charset=utf-8"),
        ("/docs/swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("/docs/swagger-ui/swagger-ui-standalone-preset.js", "text/javascript; charset=utf-8"),
        ("/docs/swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
        ("/docs/swagger-ui/favicon-32x32.png", "image/png"),
    ],
)
def test_console_files_have_their_type_and_the_console_policy(
    gateway: int, path: str, content_type: str
) -> None:
    answer = get(gateway, path)
    assert answer.status == 200
    # With nosniff, a script or stylesheet of another type would not run.
    assert answer.headers["Content-Type"] == content_type
    assert answer.headers.get_all("Content-Security-Policy") == [DOCS_CSP]
    assert answer.headers.get_all("X-Content-Type-Options") == ["nosniff"]
    assert answer.headers.get_all("X-Frame-Options") == ["DENY"]
    assert answer.headers.get_all("Referrer-Policy") == ["no-referrer"]
    assert answer.headers.get_all("Cache-Control") == ["no-cache"]


def test_the_console_policy_allows_no_inline_code_and_no_other_origin() -> None:
    directives = dict(d.strip().split(" ", 1) for d in DOCS_CSP.split(";"))
    sources = " ".join(directives.values())
    assert "unsafe-inline" not in sources
    assert "unsafe-eval" not in sources
    assert not re.search(r"https?:|\*", sources)
    assert directives["frame-ancestors"] == "'none'"
    rendered = "".join(render.render(config_from_env("compose", {})).values())
    assert f'Content-Security-Policy "{DOCS_CSP}" always;' in rendered


@pytest.mark.parametrize(
    "path",
    [
        "/docs/swagger-ui/swagger-ui.js",  # in the package, not loaded by the page
        "/docs/swagger-ui/swagger-ui-bundle.js.map",
        "/docs/swagger-ui/oauth2-redirect.html",
        "/docs/swagger-ui/swagger-initializer.js",  # the package's own, pointing at a public demo
        "/docs/swagger-ui/../../render.py",
        "/docs/nothing.html",
    ],
)
def test_nothing_else_is_served_under_docs(gateway: int, path: str) -> None:
    answer = get(gateway, path)
    assert answer.status == 404
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.headers.get_all("Content-Security-Policy") == [API_CSP]


def test_the_api_keeps_its_own_policy(gateway: int) -> None:
    answer = get(gateway, "/api/users")  # no instance behind it here: the gateway's own 502
    assert answer.status == 502
    assert answer.headers.get_all("Content-Security-Policy") == [API_CSP]
    assert answer.headers.get_all("Cache-Control") == ["no-store"]
