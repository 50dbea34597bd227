"""The fault suite's SMTP front: a real SMTP server (aiosmtpd) between the workers and the sink.

In mode ``ok`` it relays every message to the sink (aiosmtplib). ``tempfail`` answers every
DATA with ``451 4.3.0`` (a mail server that is overloaded or greylisting); ``reject`` answers
``550 5.1.1`` to RCPT for recipients whose address contains ``reject_pattern``, and relays the
rest. Modes change over a small HTTP control API.

    python -m tests.chaos.smtp_front --port 2525 --upstream-port 1025 --control 18998
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiosmtplib
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

MODES = ("ok", "tempfail", "reject")


class FrontHandler:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = "ok"
        self.reject_pattern = ""
        self.counts = {"relayed": 0, "tempfailed": 0, "rejected": 0}

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.mode == "reject" and self.reject_pattern and self.reject_pattern in address:
            self.counts["rejected"] += 1
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.mode == "tempfail":
            self.counts["tempfailed"] += 1
            return "451 4.3.0 try again later"
        content = envelope.original_content or envelope.content or b""
        try:
            await aiosmtplib.send(
                content if isinstance(content, bytes) else content.encode(),
                sender=envelope.mail_from or "",
                recipients=list(envelope.rcpt_tos),
                hostname=self.upstream_host,
                port=self.upstream_port,
                timeout=10,
            )
        except (aiosmtplib.SMTPException, OSError):
            return "451 4.4.1 upstream unavailable"
        self.counts["relayed"] += 1
        return "250 OK"


def control_app(handler: FrontHandler) -> web.Application:
    app = web.Application()

    async def get_mode(request: web.Request) -> web.Response:
        return web.json_response(
            {"mode": handler.mode, "reject_pattern": handler.reject_pattern, **handler.counts}
        )

    async def put_mode(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        mode = str(body.get("mode", "ok"))
        if mode not in MODES:
            raise web.HTTPUnprocessableEntity(text=f"mode must be one of {', '.join(MODES)}")
        handler.mode, handler.reject_pattern = mode, str(body.get("reject_pattern", ""))
        return await get_mode(request)

    app.router.add_get("/mode", get_mode)
    app.router.add_put("/mode", put_mode)
    return app


async def serve(port: int, upstream_host: str, upstream_port: int, control_port: int) -> None:
    handler = FrontHandler(upstream_host, upstream_port)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="chaos-smtp-front"), "127.0.0.1", port)
    runner = web.AppRunner(control_app(handler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    print(f"smtp front on {port} -> {upstream_host}:{upstream_port}, control {control_port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.smtp_front")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--control", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.upstream_host, args.upstream_port, args.control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
