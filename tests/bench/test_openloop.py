"""The open-loop client sends on its own schedule and counts every answer and failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

from bench import openloop


async def test_every_scheduled_request_is_sent_and_answered(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> None:
    seen = []

    async def create(request: web.Request) -> web.Response:
        seen.append(await request.text())
        status = 201 if len(seen) % 5 else 503
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_post("/orders", create)
    server = await aiohttp_server(app)
    result = await openloop.run(
        str(server.make_url("/orders")),
        method="POST",
        headers={},
        body=b"{}",
        rate=200,
        duration_s=0.5,
        seed=3,
    )
    assert result["sent"] == len(seen) > 50
    assert result["statuses"]["201"] + result["statuses"]["503"] == result["sent"]
    assert result["statuses"]["503"] == result["sent"] // 5
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]


async def test_a_refused_connection_is_an_error_not_a_crash() -> None:
    result = await openloop.run(
        "http://127.0.0.1:9/", method="GET", headers={}, body=None, rate=50, duration_s=0.2, seed=1
    )
    assert result["sent"] > 0
    assert sum(result["statuses"].values()) == result["sent"]
    assert all(status.startswith("error:") for status in result["statuses"])
