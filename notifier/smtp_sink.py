"""A development SMTP server that keeps every message it receives, for inspection.

``python -m notifier.smtp_sink --port 1025 --http-port 8025 --maildir var/mail``

Messages are stored in a Maildir (readable by mutt, or plain files under ``new/``) and listed
over HTTP:

    GET    /messages              newest first: id, from, to, subject, message_id, date, size
    GET    /messages/{id}         headers plus text and HTML bodies
    GET    /messages/{id}/raw     the message as received (message/rfc822)
    DELETE /messages              empty the mailbox

Never expose it beyond localhost: it accepts mail from anyone, for anyone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mailbox
import sys
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

MAILBOX: web.AppKey[mailbox.Maildir] = web.AppKey("maildir", mailbox.Maildir)
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class MaildirHandler:
    """aiosmtpd handler: every accepted message lands in the Maildir with its envelope recorded."""

    def __init__(self, maildir: mailbox.Maildir) -> None:
        self.maildir = maildir

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or b""
        # What an MDA adds: the envelope, which the headers alone do not tell (Bcc, bounces).
        trace = (
            f"Return-Path: <{envelope.mail_from}>\r\nX-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        await asyncio.to_thread(self.maildir.add, trace + content)
        return "250 Message accepted for delivery"


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n")


def _summary(key: str, message: EmailMessage, size: int) -> dict[str, Any]:
    return {
        "id": key,
        "from": message.get("From"),
        "to": message.get("To"),
        "envelope_to": message.get("X-Envelope-To"),
        "subject": message.get("Subject"),
        "message_id": message.get("Message-ID"),
        "trace_id": message.get("X-Trace-Id"),
        "date": message.get("Date"),
        "size": size,
    }


def _read_all(maildir: mailbox.Maildir) -> list[tuple[float, dict[str, Any]]]:
    found: list[tuple[float, dict[str, Any]]] = []
    for key in maildir.keys():  # noqa: SIM118 - iterating a Maildir yields messages, not keys
        try:
            raw = maildir.get_bytes(key)
            received = maildir.get_message(key).get_date()
        except (KeyError, OSError):
            continue  # deleted meanwhile
        found.append((received, _summary(key, _parse(raw), len(raw))))
    return found


async def list_messages(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(_read_all, request.app[MAILBOX])
    found.sort(key=lambda item: item[0], reverse=True)
    return web.json_response({"items": [summary for _, summary in found]})


async def _raw(request: web.Request) -> bytes:
    try:
        return await asyncio.to_thread(request.app[MAILBOX].get_bytes, request.match_info["id"])
    except (KeyError, OSError):
        raise web.HTTPNotFound(
            text=json.dumps({"detail": "no such message"}), content_type="application/json"
        ) from None


async def get_message(request: web.Request) -> web.Response:
    raw = await _raw(request)
    message = _parse(raw)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return web.json_response(
        {
            **_summary(request.match_info["id"], message, len(raw)),
            "headers": [[name, str(value)] for name, value in message.items()],
            "text": _lines(text.get_content()) if isinstance(text, EmailMessage) else None,
            "html": _lines(html.get_content()) if isinstance(html, EmailMessage) else None,
        }
    )


async def get_raw(request: web.Request) -> web.Response:
    return web.Response(body=await _raw(request), content_type="message/rfc822")


async def clear_messages(request: web.Request) -> web.Response:
    await asyncio.to_thread(request.app[MAILBOX].clear)
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "service": "smtp_sink"})


def create_http_app(maildir: mailbox.Maildir) -> web.Application:
    app = web.Application()
    app[MAILBOX] = maildir
    app.router.add_get("/messages", list_messages)
    app.router.add_delete("/messages", clear_messages)
    app.router.add_get("/messages/{id}", get_message)
    app.router.add_get("/messages/{id}/raw", get_raw)
    app.router.add_get("/health", health)
    return app


async def start_smtp(maildir: mailbox.Maildir, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(maildir)
    return await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink.local", data_size_limit=MAX_MESSAGE_BYTES, loop=loop),
        host=host,
        port=port,
    )


async def serve(host: str, port: int, http_port: int, folder: Path) -> None:
    maildir = mailbox.Maildir(folder, create=True)
    smtp = await start_smtp(maildir, host, port)
    runner = web.AppRunner(create_http_app(maildir), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port).start()
    print(
        json.dumps(
            {
                "message": "smtp sink listening",
                "service.name": "smtp_sink",
                "smtp": f"{host}:{port}",
                "http": f"{host}:{http_port}",
                "maildir": str(folder),
            }
        ),
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        smtp.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifier.smtp_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025, help="SMTP port")
    parser.add_argument("--http-port", type=int, default=8025, help="HTTP port for listing mail")
    parser.add_argument("--maildir", type=Path, default=Path("var/mail"))
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.http_port, args.maildir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
