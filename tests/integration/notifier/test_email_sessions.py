"""EmailSender keeps its SMTP sessions open between messages and reconnects when one was dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from notifier.channels import Outgoing
from notifier.channels.email import MAX_SESSIONS, EmailSender
from notifier.templates import Rendered
from tests.integration.notifier.conftest import delivery_settings
from tests.integration.notifier.helpers import ScriptedSmtpHandler, SmtpServer
from tests.net import free_port


class CountingHandler(ScriptedSmtpHandler):
    """Counts the SMTP sessions (one EHLO each) next to the messages."""

    sessions: int = 0

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses


def _start(handler: CountingHandler, port: int) -> SmtpServer:
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="smtp.test")
    controller.start()
    return SmtpServer("127.0.0.1", port, handler, controller)


@pytest.fixture
def counting_smtp() -> Iterator[SmtpServer]:
    server = _start(CountingHandler(), free_port())
    yield server
    server.controller.stop()


def _outgoing() -> Outgoing:
    return Outgoing(
        notification_id=str(uuid.uuid4()),
        recipient="ada@example.com",
        recipient_name="Ada",
        trace_id=None,
        content=Rendered(template="t", channel="email", parts={"subject": "Hi", "text": "Hello"}),
    )


def _sender(smtp: SmtpServer) -> EmailSender:
    return EmailSender(delivery_settings(smtp, "http://127.0.0.1:9"))


def _handler(smtp: SmtpServer) -> Any:
    return smtp.handler


async def test_messages_one_after_another_share_one_session(counting_smtp: SmtpServer) -> None:
    sender = _sender(counting_smtp)
    ids = [await sender.send(_outgoing()) for _ in range(5)]
    assert len(counting_smtp.handler.messages) == 5
    assert [m["Message-ID"] for m in counting_smtp.handler.messages] == ids
    assert _handler(counting_smtp).sessions == 1
    await sender.aclose()


async def test_concurrent_messages_use_at_most_max_sessions(counting_smtp: SmtpServer) -> None:
    counting_smtp.handler.delay_s = 0.05
    sender = _sender(counting_smtp)
    await asyncio.gather(*(sender.send(_outgoing()) for _ in range(3 * MAX_SESSIONS)))
    assert len(counting_smtp.handler.messages) == 3 * MAX_SESSIONS
    assert _handler(counting_smtp).sessions == MAX_SESSIONS
    await sender.aclose()


async def test_a_session_the_server_dropped_is_replaced_and_the_message_sent_once() -> None:
    port = free_port()
    first = _start(CountingHandler(), port)
    sender = _sender(first)
    await sender.send(_outgoing())
    first.controller.stop()  # the idle session dies with the server
    restarted = _start(CountingHandler(), port)
    try:
        message_id = await sender.send(_outgoing())
        assert [m["Message-ID"] for m in restarted.handler.messages] == [message_id]
        assert _handler(restarted).sessions == 1
        await sender.aclose()
    finally:
        restarted.controller.stop()


async def test_a_refused_message_does_not_leave_its_session_for_the_next(counting_smtp: SmtpServer) -> None:
    counting_smtp.handler.data_replies.append("451 4.7.1 greylisted, try again later")
    sender = _sender(counting_smtp)
    with pytest.raises(Exception, match="451"):
        await sender.send(_outgoing())
    await sender.send(_outgoing())
    assert len(counting_smtp.handler.messages) == 1
    assert _handler(counting_smtp).sessions == 2
    await sender.aclose()
