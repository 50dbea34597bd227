"""One bare aiohttp handler: the floor for what an aiohttp service can answer on this box.

``python -m bench.bare_app --port N`` serves ``GET /`` with a small JSON body, no middleware,
no access log — the same aiohttp and interpreter the services run on.
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
