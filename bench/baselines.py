"""Same-run baselines: nginx answering ``return 200`` and one bare aiohttp handler, each loaded
by wrk exactly as the gateway is, with the CPU its process spent per request."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs

WRK_DIR = Path(__file__).parent / "wrk"
NGINX_CONF = """\
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 '{{"status":"UP"}}'; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_wrk(output: str) -> dict[str, Any]:
    """The JSON line bench/wrk/report.lua prints, plus requests/s."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            seconds = result["duration_us"] / 1_000_000
            result["requests_per_s"] = round(result["requests"] / seconds, 1) if seconds else 0.0
            result["non_2xx"] = result["errors"]["status"]
            result["socket_errors"] = sum(v for k, v in result["errors"].items() if k != "status")
            return result
    raise RuntimeError(f"wrk printed no report:\n{output[-2000:]}")


async def wrk(
    url: str, *, connections: int, seconds: float, script: str, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], int]:
    """Run wrk; returns its report and its pid (so its CPU is the load generator's)."""
    threads = min(2, connections)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(WRK_DIR / script),
        url,
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "BENCH_WRK_DIR": str(WRK_DIR), **(env or {})},
    )
    out, _ = await process.communicate()
    return parse_wrk(out.decode()), process.pid


def _children_cpu(root: int) -> float:
    total = 0.0
    for proc in procs.snapshot().values():
        if proc.pid == root or proc.ppid == root:
            total += proc.cpu_ticks / procs.CLOCK_TICKS
    return total


async def _measure(url: str, root_pid: int, *, connections: int, seconds: float) -> dict[str, Any]:
    before = _children_cpu(root_pid)
    report, _ = await wrk(url, connections=connections, seconds=seconds, script="get.lua")
    spent = _children_cpu(root_pid) - before
    report["cpu_ms_per_request"] = round(spent * 1000 / max(report["requests"], 1), 4)
    return report


async def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def nginx_return_200(folder: Path, *, connections: int, seconds: float, workers: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, folder=folder, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    subprocess.run([nginx, "-p", str(folder), "-c", str(conf)], check=True)
    pid = int((folder / "nginx.pid").read_text())
    try:
        await _wait_port(port)
        return await _measure(f"http://127.0.0.1:{port}/", pid, connections=connections, seconds=seconds)
    finally:
        os.kill(pid, signal.SIGQUIT)


async def bare_aiohttp(*, connections: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bare_app", "--port", str(port)
    )
    try:
        await _wait_port(port)
        return await _measure(
            f"http://127.0.0.1:{port}/", process.pid, connections=connections, seconds=seconds
        )
    finally:
        process.terminate()
        await process.wait()
