"""A stand-in for one service instance behind the gateway, for tests/config/test_gateway_live.py.

``python tests/config/echo_upstream.py --port N --name user_api-1``. Every request is answered
with what arrived (method, path, headers, body size) and counted; ``/_stats`` tells the counts
and how many distinct TCP connections the gateway opened. ``.../abort`` closes the connection
without answering, as a crashing instance would. The response headers imitate a service that
sets its own security headers, so the test can see the gateway replace rather than duplicate them.
"""

from __future__ import annotations

import argparse
from collections import Counter

from aiohttp import web

HITS: web.AppKey[Counter[str]] = web.AppKey("hits", Counter)
PEERS: web.AppKey[set[tuple[str, int]]] = web.AppKey("peers", set)
NAME: web.AppKey[str] = web.AppKey("name", str)


async def stats(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({"name": app[NAME], "hits": dict(app[HITS]), "connections": len(app[PEERS])})


async def echo(request: web.Request) -> web.StreamResponse:
    app = request.app
    app[HITS][f"{request.method} {request.path}"] += 1
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if peer:
        app[PEERS].add((peer[0], peer[1]))
    body = await request.read()
    if request.path.endswith("/abort"):
        assert request.transport is not None
        request.transport.abort()
        raise web.HTTPInternalServerError  # never reaches the client: the connection is gone
    headers = {
        "Server": "echo/1.0",
        "X-Powered-By": "echo-test",
        "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "max-age=60",
        "X-Request-ID": request.headers.get("X-Request-ID", "none"),
    }
    if request.path == "/openapi.yaml":
        return web.Response(
            text=f"openapi: 3.1.0\ninfo: {{title: {app[NAME]}, version: '1'}}\npaths: {{}}\n",
            content_type="application/yaml",
            headers=headers,
        )
    return web.json_response(
        {
            "service": app[NAME],
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "body_bytes": len(body),
        },
        headers=headers,
    )


def make_app(name: str) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[NAME] = name
    app[HITS] = Counter()
    app[PEERS] = set()
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.name), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
