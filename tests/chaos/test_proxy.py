"""The fault proxy against a real TCP echo server: each mode does to a client what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.chaos.proxy import Route
from tests.net import free_port


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def route() -> AsyncIterator[Route]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    upstream_port = server.sockets[0].getsockname()[1]
    proxied = Route("echo", free_port(), "127.0.0.1", upstream_port)
    await proxied.start()
    yield proxied
    await proxied.close_listener()
    proxied.reset_all()
    server.close()


async def _write_then_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"b")
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(1), 2)


async def _round_trip(port: int, payload: bytes = b"ping", timeout_s: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout_s)
    finally:
        writer.close()


async def test_ok_forwards_both_ways(route: Route) -> None:
    assert await _round_trip(route.listen_port) == b"ping"


async def test_down_refuses_and_resets_live_connections(route: Route) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", route.listen_port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    await route.set_mode("down")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", route.listen_port)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _write_then_read(reader, writer)
    await route.set_mode("ok")
    assert await _round_trip(route.listen_port) == b"ping"


async def test_reset_accepts_then_resets(route: Route) -> None:
    await route.set_mode("reset")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _round_trip(route.listen_port)


async def test_blackhole_swallows_without_an_answer(route: Route) -> None:
    await route.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        await _round_trip(route.listen_port, timeout_s=0.5)


async def test_latency_delays_each_direction(route: Route) -> None:
    await route.set_mode("latency", latency_ms=200)
    started = time.monotonic()
    assert await _round_trip(route.listen_port) == b"ping"
    assert time.monotonic() - started >= 0.4  # 200 ms there, 200 ms back


async def test_bandwidth_limits_throughput(route: Route) -> None:
    await route.set_mode("bandwidth", rate_bps=2000)
    started = time.monotonic()
    assert await _round_trip(route.listen_port, b"x" * 1000, timeout_s=5) == b"x" * 1000
    assert time.monotonic() - started >= 0.5  # 1000 B at 2000 B/s, each way


async def test_an_unknown_mode_is_refused(route: Route) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        await route.set_mode("flaky")
