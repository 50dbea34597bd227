"""A tiny service run by test_graceful_shutdown through ``common.cli.serve``: ``/slow`` takes 1.5 s."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from common.cli import serve
from common.web import base_application


def make_app() -> web.Application:
    app = base_application("shutdown_probe")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({"finished": True})

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        print("cleanup ran", flush=True)

    app.router.add_get("/slow", slow)
    app.cleanup_ctx.append(ctx)
    return app


if __name__ == "__main__":
    asyncio.run(serve(make_app(), "127.0.0.1", int(sys.argv[1]), drain_s=1.0, shutdown_timeout_s=5.0))
