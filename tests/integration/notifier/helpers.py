"""Test doubles shared by tests/integration/notifier and tests/integration/workers: a real SMTP
server that a test can script (refuse, defer, stall), contract-shaped events, and small waiting helpers."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from common.events import new_event
from tests.net import free_port


@dataclass
class ScriptedSmtpHandler:
    """Accepts mail into ``messages`` unless told otherwise.

    ``data_replies``/``rcpt_replies``: replies for the next DATA / RCPT commands, in order.
    ``stall_next``: the next DATA waits until ``release`` is set, then answers 451 without
    keeping the message (the client that sent it is usually gone by then).
    ``delay_s``: every accepted DATA first waits this long (a slow but healthy server).
    """

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    data_commands: int = 0
    stall_next: bool = False
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    delay_s: float = 0.0

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.data_commands += 1
        if self.stall_next:
            self.stall_next = False
            self.stalled.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 aborted by the test"
        if self.data_replies:
            return self.data_replies.pop(0)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        parsed = BytesParser(policy=policy.default).parsebytes(envelope.original_content or b"")
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
        return "250 2.0.0 queued"

    def with_message_id(self, message_id: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["Message-ID"] == message_id]


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: ScriptedSmtpHandler
    controller: Controller


def start_smtp_server() -> SmtpServer:
    handler = ScriptedSmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="smtp.test")
    controller.start()
    return SmtpServer("127.0.0.1", port, handler, controller)


def contact(**overrides: Any) -> dict[str, Any]:
    user_id = str(uuid.uuid4())
    return {
        "id": user_id,
        "email": f"user.{user_id[:8]}@example.com",
        "name": "Ada Lovelace",
        "phone": "+447700900123",
        "notification_preferences": {"email": True, "sms": False, "push": False},
        "push_token": None,
        **overrides,
    }


def order_for(user: dict[str, Any], *, total: str = "44.98", status: str = "PENDING") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "user_id": user["id"],
        "status": status,
        "currency": "EUR",
        "items": [
            {"sku": "BOOK-1", "name": "A book", "quantity": 2, "unit_price": "19.99", "line_total": "39.98"},
            {"sku": "PEN-2", "name": "A pen", "quantity": 1, "unit_price": "5.00", "line_total": "5.00"},
        ],
        "total": total,
        "created_at": "2026-11-25T19:00:00.000Z",
        "updated_at": "2026-11-25T19:00:00.000Z",
    }


def order_created_event(user: dict[str, Any] | None = None, **order: Any) -> dict[str, Any]:
    user = user or contact()
    return new_event(
        "order.created", {"order": order_for(user, **order), "user": user}, producer="tests", trace_id=None
    )


def user_registered_event(user: dict[str, Any] | None = None) -> dict[str, Any]:
    return new_event("user.registered", {"user": user or contact()}, producer="tests", trace_id=None)


async def wait_until(
    condition: Callable[[], Any], *, timeout_s: float = 15.0, interval_s: float = 0.05
) -> Any:
    """Poll an async or sync condition until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
