"""The shared HTTP behaviour: problem+json for every error, trace ids, security headers, readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from common.health import add_health_check
from common.logging import trace_id_from_headers
from common.web import base_application


def _app() -> web.Application:
    app = base_application("probe")

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/boom", boom)
    app.router.add_get("/ok", ok)
    return app


async def test_unexpected_errors_are_problem_500_without_internals(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    response = await client.get("/boom")
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    assert "secret internals" not in await response.text()


async def test_aiohttp_errors_are_problems_with_security_headers(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    missing = await client.get("/nowhere")
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"
    wrong_method = await client.post("/ok")
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "GET,HEAD" or "GET" in wrong_method.headers["Allow"]
    for response in (missing, wrong_method):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Server"] == "app"


async def test_request_id_is_taken_from_traceparent_or_header_or_generated(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    from_traceparent = await client.get("/ok", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert from_traceparent.headers["X-Request-ID"] == trace
    passed = await client.get("/ok", headers={"X-Request-ID": "gw-123"})
    assert passed.headers["X-Request-ID"] == "gw-123"
    hostile = await client.get("/ok", headers={"X-Request-ID": "a b<script>"})
    assert hostile.headers["X-Request-ID"] not in ("a b<script>", "")


def test_an_all_zero_traceparent_is_not_a_trace_id() -> None:
    generated = trace_id_from_headers({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"})
    assert generated != "0" * 32


async def test_readiness_names_the_failed_dependency(aiohttp_client: Any) -> None:
    app = _app()

    async def fine() -> None:
        return None

    async def broken() -> None:
        raise ConnectionRefusedError("connection refused")

    add_health_check(app, "postgresql", fine)
    add_health_check(app, "redis", broken)
    client = await aiohttp_client(app)
    ready = await client.get("/health/ready")
    assert ready.status == 503
    body = await ready.json()
    assert body["detail"] == "unavailable: redis"
    assert body["components"]["postgresql"] == {"status": "UP"}
    assert (await client.get("/health")).status == 200


async def test_readiness_times_each_dependency_probe(aiohttp_client: Any) -> None:
    app = base_application("timed")

    async def slow() -> None:
        await asyncio.sleep(0.03)

    add_health_check(app, "postgresql", slow)
    client = await aiohttp_client(app)
    assert (await client.get("/health/ready")).status == 200
    metrics = await (await client.get("/metrics")).text()
    count = 'readiness_check_duration_seconds_count{component="postgresql",service="timed"} 1.0'
    assert count in metrics
    # The 30 ms probe lands above the 25 ms bucket, so the observation is its real duration.
    fast = 'readiness_check_duration_seconds_bucket{component="postgresql",le="0.025",service="timed"} 0.0'
    assert fast in metrics


@pytest.mark.parametrize("cancellation", [False, True], ids=["handler-runs-on", "handler-cancelled"])
async def test_a_client_that_leaves_mid_body_is_no_server_error(
    aiohttp_client: Any, cancellation: bool
) -> None:
    service = f"probe_gone_{cancellation}".lower()
    app = base_application(service)
    reached: list[str] = []

    async def upload(request: web.Request) -> web.Response:
        reached.append("handler")
        await request.read()  # the client is gone before the body is whole
        return web.json_response({"ok": True})

    app.router.add_post("/upload", upload)
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": cancellation})
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.2)

    metrics = await (await client.get("/metrics")).text()
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("http_requests_total") and f'service="{service}"' in line
    ]
    assert reached == ["handler"]
    assert any('status="499"' in line and "/upload" in line for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
