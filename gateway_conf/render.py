"""Render the gateway's nginx configuration from ``gateway_conf/templates/``.

One set of templates serves both ways of running the system; what differs is where the
services are (host ports or compose service names) and where nginx keeps its files::

    python -m gateway_conf.render --mode host --out var/gateway/conf        # scripts/gateway.sh
    python -m gateway_conf.render --mode compose --out /etc/gateway/conf    # the gateway-config container

Every value that ends up in the configuration is validated first, so a stray quote or
semicolon in an environment variable is an error here rather than a hole in nginx's config.
Besides the standard library it needs PyYAML (the Allow of the gateway's 405s comes from the
services' OpenAPI documents, gateway_conf/problems.py), cryptography for ``--self-signed-if-missing``
and the API console's assets (the swagger-ui-py package, found without importing it).

The API console at ``/docs`` is ``gateway_conf/docs/`` (the page and its initializer) plus Swagger
UI's own files. In host mode nginx serves both where they are: this folder, and the package's
``static/`` folder in the virtualenv. In compose mode nginx runs in its own image, without this
package or the virtualenv, so the renderer copies both into ``/etc/gateway/conf/docs/``: the
``gateway-conf`` volume the gateway already mounts (read-only) for its configuration.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway_conf.config import (
    DOCS_PAGE_FILES,
    DOCS_SITE,
    SERVICES,
    SWAGGER_UI_ASSETS,
    GatewayConfig,
    RenderError,
    swagger_ui_static,
)
from gateway_conf.environment import config_from_env
from gateway_conf.problems import GATEWAY_READ_ONLY, allow_map, error_pages, retry_after

TEMPLATES = Path(__file__).parent / "templates"
PLACEHOLDER = re.compile(r"\{\{ ([a-z][a-z0-9_]*) \}\}")

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(\d{1,5})$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?$")
_RATE = re.compile(r"^[1-9]\d{0,5}r/[sm]$")
_PATH = re.compile(r"^[^\s;{}'\"$\\#]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}( [a-z_][a-z0-9_-]{0,31})?$")
_WORKERS = re.compile(r"^(auto|[1-9]\d{0,2})$")


# --- validation --------------------------------------------------------------------------------


def _port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise RenderError(f"{what}: {value} is not a TCP port")
    return value


def _host_port(value: str, what: str) -> str:
    match = _HOST_PORT.match(value)
    if not match:
        raise RenderError(f"{what}: {value!r} is not host:port")
    _port(int(match.group(2)), what)
    return value


def _path(value: str, what: str) -> str:
    if not _PATH.match(value):
        raise RenderError(f"{what}: {value!r} is not a plain path (no spaces, quotes, ';', '$', '#')")
    return value


def _address(value: str, what: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise RenderError(f"{what}: {value!r} is not an IP address or CIDR range") from None
    return value


def _validate(cfg: GatewayConfig) -> None:
    missing = [name for name in SERVICES if not cfg.upstreams.get(name)]
    if missing:
        raise RenderError(f"no instances given for {', '.join(missing)}")
    unknown = sorted(set(cfg.upstreams) - set(SERVICES))
    if unknown:
        raise RenderError(f"unknown upstream(s) {', '.join(unknown)}; expected {', '.join(SERVICES)}")
    for name, servers in cfg.upstreams.items():
        for server in servers:
            _host_port(server, f"{name} instance")
    for port, what in ((cfg.http_port, "HTTP port"), (cfg.https_port, "HTTPS port")):
        _port(port, what)
    _port(cfg.public_https_port, "public HTTPS port")
    if cfg.http_port == cfg.https_port:
        raise RenderError("the HTTP and HTTPS ports must differ")
    if cfg.listen_address:
        ipaddress.ip_address(cfg.listen_address.strip("[]"))
    if ":" in cfg.status_listen:
        _host_port(cfg.status_listen, "status listen address")
    else:
        _port(int(cfg.status_listen), "status port")
    for value in cfg.status_allow:
        _address(value, "status allow-list")
    for value in cfg.trusted_proxies:
        _address(value, "trusted proxy")
    for value, what in (
        (cfg.tls_cert, "TLS certificate"),
        (cfg.tls_key, "TLS key"),
        (cfg.pid_file, "pid file"),
        (cfg.error_log, "error log"),
        (cfg.temp_dir, "temp dir"),
        (cfg.docs_dir, "API console folder"),
        (cfg.swagger_ui_dir, "Swagger UI folder"),
    ):
        _path(value, what)
    log_path, *log_options = cfg.access_log.split(" ")
    _path(log_path, "access log")
    if any(not re.match(r"^(buffer=\d+[km]?|flush=\d+[sm])$", opt) for opt in log_options):
        raise RenderError(f"access log: unexpected options in {cfg.access_log!r}")
    if cfg.worker_user is not None and not _USER.match(cfg.worker_user):
        raise RenderError(f"worker user: {cfg.worker_user!r} is not 'user' or 'user group'")
    if not _WORKERS.match(cfg.worker_processes):
        raise RenderError(f"worker processes: {cfg.worker_processes!r} is not 'auto' or a number")
    if cfg.resolver is not None:
        _address(cfg.resolver, "resolver")
    for origin in cfg.cors_origins:
        if not _ORIGIN.match(origin):
            raise RenderError(
                f"CORS origin {origin!r} is not scheme://host[:port] (wildcards are not supported: "
                "list each origin)"
            )
    for rate, what in ((cfg.api_rate, "API rate"), (cfg.login_rate, "login rate")):
        if not _RATE.match(rate):
            raise RenderError(f"{what}: {rate!r} is not like 100r/s or 30r/m")
    for number, what in (
        (cfg.api_burst, "API burst"),
        (cfg.login_burst, "login burst"),
        (cfg.max_fails, "max_fails"),
        (cfg.fail_timeout_s, "fail_timeout"),
        (cfg.keepalive, "keepalive"),
    ):
        if number < 0 or number > 100_000:
            raise RenderError(f"{what}: {number} is out of range")


# --- rendering ---------------------------------------------------------------------------------


def _upstream_block(cfg: GatewayConfig, name: str) -> str:
    resolve = " resolve" if cfg.resolver else ""
    lines = [
        f"    upstream {name} {{",
        # A shared zone: failure counts (max_fails) are seen by every worker, not one each.
        f"        zone upstream_{name} 64k;",
        "        least_conn;",
    ]
    lines += [
        f"        server {server}{resolve} max_fails={cfg.max_fails} fail_timeout={cfg.fail_timeout_s}s;"
        for server in cfg.upstreams[name]
    ]
    lines += [
        f"        keepalive {cfg.keepalive};",
        "        keepalive_requests 1000;",
        # Below aiohttp's 75 s, so nginx, not the service, closes an idle connection first.
        "        keepalive_timeout 60s;",
        "    }",
        "",
    ]
    return "\n".join(lines)


def _listen_lines(cfg: GatewayConfig) -> str:
    prefix = f"{cfg.listen_address}:" if cfg.listen_address else ""
    tls = " ssl http2" if cfg.http2 == "listen" else " ssl"
    return f"        listen {prefix}{cfg.http_port};\n        listen {prefix}{cfg.https_port}{tls};"


def values(cfg: GatewayConfig) -> dict[str, str]:
    """The placeholder values for ``cfg``, after validating it."""
    _validate(cfg)
    status_allow = "".join(f"        allow {a};\n" for a in cfg.status_allow) + "        deny all;"
    real_ip = ""
    if cfg.trusted_proxies:
        real_ip = (
            "".join(f"    set_real_ip_from {p};\n" for p in cfg.trusted_proxies)
            + "    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;\n"
        )
    resolver = ""
    if cfg.resolver:
        resolver = f"    resolver {cfg.resolver} valid=10s ipv6=off;\n    resolver_timeout 2s;\n"
    return {
        "mode": cfg.mode,
        "worker_user": f"user {cfg.worker_user};" if cfg.worker_user else "",
        "worker_processes": cfg.worker_processes,
        "pid_file": cfg.pid_file,
        "error_log": cfg.error_log,
        "access_log": f"{cfg.access_log.split(' ')[0]} gateway_json"
        + "".join(" " + o for o in cfg.access_log.split(" ")[1:]),
        "temp_dir": cfg.temp_dir,
        "resolver": resolver,
        "real_ip": real_ip,
        "api_rate": cfg.api_rate,
        "api_burst": str(cfg.api_burst),
        "login_rate": cfg.login_rate,
        "login_burst": str(cfg.login_burst),
        "cors_origins": "\n".join(f'        "{o}" $http_origin;' for o in cfg.cors_origins)
        or "        # none: CORS_ALLOWED_ORIGINS is empty, so no cross-origin call is allowed",
        "https_redirect": "1" if cfg.https_redirect else "0",
        "https_port_suffix": "" if cfg.public_https_port == 443 else f":{cfg.public_https_port}",
        "upstreams": "".join(_upstream_block(cfg, name) for name in SERVICES),
        "listen": _listen_lines(cfg),
        "http2": "        http2 on;" if cfg.http2 == "directive" else "",
        "tls_cert": cfg.tls_cert,
        "tls_key": cfg.tls_key,
        "status_listen": cfg.status_listen,
        "status_allow": status_allow,
        "error_pages": error_pages(),
        "allow_map": allow_map(SERVICES),
        "gateway_read_only_tail": GATEWAY_READ_ONLY.removeprefix("^"),
        "api_retry_after": str(retry_after(cfg.api_rate)),
        "login_retry_after": str(retry_after(cfg.login_rate)),
        "docs_dir": cfg.docs_dir.rstrip("/"),
        "swagger_ui_dir": cfg.swagger_ui_dir.rstrip("/"),
        "swagger_ui_assets": "|".join(name.replace(".", r"\.") for name in SWAGGER_UI_ASSETS),
    }


def render(cfg: GatewayConfig) -> dict[str, str]:
    """Every configuration file, by path relative to the output folder."""
    subst = values(cfg)
    files: dict[str, str] = {}
    for template in sorted(TEMPLATES.rglob("*.conf")):
        text = template.read_text()

        def fill(match: re.Match[str], template: Path = template) -> str:
            try:
                return subst[match.group(1)]
            except KeyError:
                raise RenderError(f"{template.name}: no value for {{{{ {match.group(1)} }}}}") from None

        rendered = PLACEHOLDER.sub(fill, text)
        if "{{" in rendered:
            raise RenderError(f"{template.name}: malformed placeholder left after rendering")
        # Blank placeholder lines would otherwise pile up as empty lines.
        rendered = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", rendered)
        files[str(template.relative_to(TEMPLATES))] = rendered
    return files


def write(cfg: GatewayConfig, out: Path) -> Path:
    """Render into ``out`` (replacing what a previous render left); returns nginx.conf's path."""
    files = render(cfg)
    for relative, text in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return out / "nginx.conf"


def make_host_folders(cfg: GatewayConfig) -> None:
    """nginx creates its temp folders, but not their parent, nor the logs' or the pid's folder."""
    for folder in (Path(cfg.temp_dir), Path(cfg.pid_file).parent, Path(cfg.error_log).parent):
        folder.mkdir(parents=True, exist_ok=True)


# --- the API console's files ------------------------------------------------------------------


def publish_docs(cfg: GatewayConfig) -> None:
    """Put the API console's files where ``cfg`` tells nginx to find them.

    Nothing to do in host mode, which serves them in place (this package and the virtualenv);
    compose mode copies them next to the configuration, into the volume the nginx container mounts.
    """
    sources = [(DOCS_SITE / name, Path(cfg.docs_dir) / name) for name in DOCS_PAGE_FILES]
    static = swagger_ui_static()
    sources += [(static / name, Path(cfg.swagger_ui_dir) / name) for name in SWAGGER_UI_ASSETS]
    for source, target in sources:
        if source.resolve() == target.resolve():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway_conf.render", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("host", "compose", "kubernetes"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for nginx.conf and snippets/")
    parser.add_argument("--worker-user", default=None, help="nginx 'user' directive (when run as root)")
    parser.add_argument(
        "--self-signed-if-missing",
        action="store_true",
        help="create a self-signed development certificate if none is there (refused in staging/production)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = config_from_env(args.mode, os.environ, worker_user=args.worker_user)
        conf = write(cfg, args.out)
        publish_docs(cfg)
        if cfg.mode == "host":
            make_host_folders(cfg)
        if args.self_signed_if_missing:
            from gateway_conf.devcert import ensure_dev_certificate

            created = ensure_dev_certificate(
                Path(cfg.tls_cert),
                Path(cfg.tls_key),
                server_name=os.environ.get("GATEWAY_SERVER_NAME", "").strip() or "localhost",
                app_env=os.environ.get("APP_ENV", "development"),
            )
            if created:
                print(f"created a self-signed development certificate: {cfg.tls_cert}")
    except (RenderError, ValueError, OSError) as exc:
        print(f"gateway_conf.render: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {conf} ({args.mode} mode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
