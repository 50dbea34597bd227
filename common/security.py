"""Security headers on every response, including problem responses and 404s."""

from __future__ import annotations

from aiohttp import web

from common.types import Handler

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _hide_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp advertises its version in Server; it helps nobody but an attacker.
    response.headers["Server"] = "app"


def setup_security(app: web.Application) -> None:
    app.on_response_prepare.append(_hide_server_header)
