"""The SMTP front relays to a real SMTP server, answers 451 in ``tempfail``, 550 in ``reject``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.chaos.smtp_front import FrontHandler
from tests.net import free_port


class Collect:
    def __init__(self) -> None:
        self.received: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.received.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
async def front() -> AsyncIterator[tuple[FrontHandler, int, Collect]]:
    loop = asyncio.get_running_loop()
    upstream, collect = free_port(), Collect()
    upstream_server = await loop.create_server(lambda: SMTP(collect), "127.0.0.1", upstream)
    handler = FrontHandler("127.0.0.1", upstream)
    port = free_port()
    front_server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", port)
    yield handler, port, collect
    front_server.close()
    upstream_server.close()


def _message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", to, "hi"
    message.set_content("hello")
    return message


async def test_ok_relays(front: tuple[FrontHandler, int, Collect]) -> None:
    _, port, collect = front
    await aiosmtplib.send(_message("b@example.com"), hostname="127.0.0.1", port=port)
    assert collect.received == [["b@example.com"]]


async def test_tempfail_is_451(front: tuple[FrontHandler, int, Collect]) -> None:
    handler, port, collect = front
    handler.mode = "tempfail"
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(_message("b@example.com"), hostname="127.0.0.1", port=port)
    assert refused.value.code == 451
    assert collect.received == []


async def test_reject_is_550_for_matching_recipients_only(front: tuple[FrontHandler, int, Collect]) -> None:
    handler, port, collect = front
    handler.mode, handler.reject_pattern = "reject", "chaos.reject"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(_message("chaos.reject.x@example.com"), hostname="127.0.0.1", port=port)
    await aiosmtplib.send(_message("chaos.fine@example.com"), hostname="127.0.0.1", port=port)
    assert collect.received == [["chaos.fine@example.com"]]
