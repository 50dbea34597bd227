"""The fault suite's own TCP fault proxy (toxiproxy-style), between the services and a server.

Each *route* listens on a local port and forwards to one upstream (PostgreSQL, RabbitMQ, Redis,
a user_api instance, SMTP). A route is in one mode at a time, changed over a small HTTP control
API while connections are live:

- ``ok``: forward both ways.
- ``down``: the port refuses connections (the listener is closed) and live connections are reset.
- ``reset``: connections are accepted and reset at once (RST); live ones are reset.
- ``blackhole``: connections are accepted and kept, bytes are swallowed both ways (a partition:
  writes succeed, nothing arrives, no answer comes).
- ``latency``: every chunk waits ``latency_ms`` before it is forwarded (both directions).
- ``bandwidth``: at most ``rate_bps`` bytes per second per direction and connection.

Only what the suite owns goes through it: the machine's shared servers are never touched, only
the suite's path to them.

    python -m tests.chaos.proxy --control 18999 pg=15432:127.0.0.1:5432 amqp=15673:127.0.0.1:5672
    curl -X PUT localhost:18999/routes/pg -d '{"mode": "down"}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODES = ("ok", "down", "reset", "blackhole", "latency", "bandwidth")
CHUNK = 64 * 1024


@dataclass
class Route:
    name: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    listen_host: str = "127.0.0.1"
    mode: str = "ok"
    latency_ms: float = 0.0
    rate_bps: float = 0.0
    accepted: int = 0
    resets: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": f"{self.listen_host}:{self.listen_port}",
            "upstream": f"{self.upstream_host}:{self.upstream_port}",
            "mode": self.mode,
            "latency_ms": self.latency_ms,
            "rate_bps": self.rate_bps,
            "live_connections": len(self._writers) // 2,
            "accepted": self.accepted,
            "resets": self.resets,
        }

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.listen_host, self.listen_port, reuse_address=True
            )

    async def close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # wait_closed would wait for every handler; the handlers are ours to reset instead.

    def reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
            self.resets += 1
        self._writers.clear()

    async def set_mode(self, mode: str, *, latency_ms: float = 0.0, rate_bps: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.mode, self.latency_ms, self.rate_bps = mode, latency_ms, rate_bps
        if mode == "down":
            await self.close_listener()
            self.reset_all()
        elif mode == "reset":
            await self.start()
            self.reset_all()
        else:
            await self.start()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode in ("reset", "down"):
            _reset(client_writer)
            self.resets += 1
            return
        if self.mode == "blackhole":
            self._writers.add(client_writer)
            try:
                while await client_reader.read(CHUNK):
                    pass  # swallowed
            except OSError:
                pass
            finally:
                self._writers.discard(client_writer)
                _reset(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _reset(client_writer)
            return
        self._writers.update((client_writer, upstream_writer))
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
            )
        finally:
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.mode == "blackhole":
                    continue
                if self.mode == "latency" and self.latency_ms > 0:
                    await asyncio.sleep(self.latency_ms / 1000)
                elif self.mode == "bandwidth" and self.rate_bps > 0:
                    await asyncio.sleep(len(data) / self.rate_bps)
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except (OSError, RuntimeError):
            # One side went away (or was reset by a fault): take the other side down too.
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = {route.name: route for route in routes}

    async def start(self) -> None:
        for route in self.routes.values():
            await route.start()

    async def stop(self) -> None:
        for route in self.routes.values():
            await route.close_listener()
            route.reset_all()

    def control_app(self) -> web.Application:
        app = web.Application()

        async def list_routes(request: web.Request) -> web.Response:
            return web.json_response({name: route.describe() for name, route in self.routes.items()})

        async def put_route(request: web.Request) -> web.Response:
            route = self.routes.get(request.match_info["name"])
            if route is None:
                raise web.HTTPNotFound(text="no such route")
            body = await request.json()
            try:
                await route.set_mode(
                    str(body.get("mode", "ok")),
                    latency_ms=float(body.get("latency_ms", 0)),
                    rate_bps=float(body.get("rate_bps", 0)),
                )
            except ValueError as exc:
                raise web.HTTPUnprocessableEntity(text=str(exc)) from None
            return web.json_response(route.describe())

        async def heal_all(request: web.Request) -> web.Response:
            for route in self.routes.values():
                await route.set_mode("ok")
            return web.json_response({name: route.describe() for name, route in self.routes.items()})

        app.router.add_get("/routes", list_routes)
        app.router.add_put("/routes/{name}", put_route)
        app.router.add_post("/heal", heal_all)
        return app


def parse_route(text: str) -> Route:
    """``name=listen_port:upstream_host:upstream_port``."""
    name, _, spec = text.partition("=")
    listen, host, port = spec.split(":")
    return Route(name, int(listen), host, int(port))


async def _serve(routes: list[Route], control_port: int) -> None:
    proxy = FaultProxy(routes)
    await proxy.start()
    runner = web.AppRunner(proxy.control_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    print(f"fault proxy: control on 127.0.0.1:{control_port}, routes {', '.join(proxy.routes)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.proxy")
    parser.add_argument("--control", type=int, required=True, help="port of the HTTP control API")
    parser.add_argument("routes", nargs="+", help="name=listen_port:upstream_host:upstream_port")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve([parse_route(text) for text in args.routes], args.control))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
