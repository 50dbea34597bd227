"""The gateway pod: gateway_conf's kubernetes rendering, from the overlay's own gateway-config,
fits the pod it runs in (ports, Services, mounts, the exporter) and passes `nginx -t`."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

from gateway_conf import render
from gateway_conf.devcert import ensure_dev_certificate
from gateway_conf.environment import config_from_env, detect_http2
from tests.config.conftest import require_tool
from tests.k8s.manifests import Obj, by_kind, find


def gateway_pod(objects: list[Obj]) -> tuple[dict[str, Obj], dict[str, str]]:
    pod = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    return containers, find(objects, "ConfigMap", "gateway-config")["data"]


def test_the_rendering_fits_the_pod(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    containers, env = gateway_pod(objects)
    cfg = config_from_env("kubernetes", env)
    nginx = containers["nginx"]
    assert {p["containerPort"] for p in nginx["ports"]} == {cfg.http_port, cfg.https_port}
    assert cfg.https_redirect is True
    assert cfg.worker_user is None  # nginx runs as the pod's non-root user
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    for servers in cfg.upstreams.values():
        for server in servers:
            host, _, port = server.rpartition(":")
            assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, server
    mounts = {m["mountPath"]: m for m in nginx["volumeMounts"]}
    assert str(Path(cfg.pid_file).parent) in mounts
    assert cfg.temp_dir in mounts
    assert not mounts[cfg.temp_dir].get("readOnly")
    assert str(Path(cfg.tls_cert).parent) in mounts
    conf_dir = next(a for a in containers["render-config"]["command"] if a.startswith("/etc/gateway/conf"))
    assert conf_dir in mounts
    assert cfg.docs_dir.startswith(conf_dir)
    (scrape,) = containers["nginx-exporter"]["args"]
    assert scrape == f"--nginx.scrape-uri=http://{cfg.status_listen}/stub_status"
    assert nginx["command"][:3] == ["nginx", "-c", f"{conf_dir}/nginx.conf"]
    # The development certificate's key is written 0600: nginx must be the user that wrote it.
    pod_user = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["securityContext"][
        "runAsUser"
    ]
    users = {name: c.get("securityContext", {}).get("runAsUser", pod_user) for name, c in containers.items()}
    assert users["render-config"] == users["nginx"]


def test_the_rendering_passes_nginx_t(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    """As tests/config does for compose: what only the pod has (the Services' names, its mounts,
    nginx 1.28's HTTP/2 syntax) swapped for local stand-ins; the rest is the rendering as is."""
    nginx_bin = require_tool("nginx")
    _, env = gateway_pod(rendered["production"])
    real = config_from_env("kubernetes", env)
    stand_in = dataclasses.replace(
        real,
        upstreams={
            name: [re.sub(r"^[^:]+:", "127.0.0.1:", server) for server in servers]
            for name, servers in real.upstreams.items()
        },
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
    conf = render.write(stand_in, tmp_path / "conf")
    result = subprocess.run(
        [nginx_bin, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
