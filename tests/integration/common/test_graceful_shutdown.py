"""SIGTERM to a service: readiness 503 at once, requests in flight finish, then cleanup, exit 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiohttp

from tests.net import free_port, stop_process, wait_for_port


async def test_sigterm_drains_then_finishes_requests_in_flight() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.common.shutdown_app", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, "shutdown_app")
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            ready = await session.get(f"{base}/health/ready")
            assert ready.status == 200
            in_flight = asyncio.create_task(session.get(f"{base}/slow"))
            await asyncio.sleep(0.3)  # the slow request has reached its handler
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            draining = await session.get(f"{base}/health/ready", headers={"Connection": "close"})
            assert draining.status == 503
            assert (await draining.json())["detail"] == "shutting down"
            # Still serving during the drain: a request that arrives now is answered.
            late = await session.get(f"{base}/health", headers={"Connection": "close"})
            assert late.status == 200
            finished = await in_flight
            assert finished.status == 200
            assert (await finished.json()) == {"finished": True}
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None
        assert "cleanup ran" in process.stdout.read().decode()
    finally:
        stop_process(process)
