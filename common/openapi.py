"""Serving a service's OpenAPI document, read once at start-up."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from common.errors import Handler


def openapi_handler(path: Path) -> Handler:
    document = path.read_bytes()

    async def serve(request: web.Request) -> web.Response:
        # Swagger UI at the gateway fetches this cross-origin in some setups; it is public anyway.
        return web.Response(
            body=document, content_type="application/yaml", headers={"Cache-Control": "public, max-age=60"}
        )

    return serve
