"""Delivering notifications for real: aiosmtpd for email, the fake provider for SMS and push."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from notifier import repository
from notifier.channels import TransientFailure
from notifier.delivery import DeliveryDeps, NotificationBusy, NotificationDead, deliver
from notifier.fanout import fan_out
from tests.integration.notifier.conftest import FakeProvider
from tests.integration.notifier.helpers import SmtpServer, contact, order_created_event, user_registered_event


async def fanned_out(pool: asyncpg.Pool, event: dict[str, Any]) -> dict[str, str]:
    """Fan the event out; return {channel: notification id}."""
    enqueued: list[str] = []

    async def enqueue(notification_id: str, trace_id: str | None) -> None:
        enqueued.append(notification_id)

    await fan_out(pool, event, dispatch=enqueue)
    rows = [await repository.get_notification(pool, i) for i in enqueued]
    return {row["channel"]: row["id"] for row in rows if row is not None}


async def attempts_of(pool: asyncpg.Pool, notification_id: str) -> list[str]:
    return [row["outcome"] for row in await repository.list_attempts(pool, notification_id)]


async def status_of(pool: asyncpg.Pool, notification_id: str) -> str:
    row = await repository.get_notification(pool, notification_id)
    assert row is not None
    status: str = row["status"]
    return status


async def test_order_email_arrives_with_the_order_id_and_total(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    event = order_created_event(total="44.98")
    order, user = event["data"]["order"], event["data"]["user"]
    ids = await fanned_out(pool, event)

    assert await deliver(deps, ids["email"]) == "sent"

    [message] = smtp.handler.messages
    assert order["id"] in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert order["id"] in text
    assert "Total: 44.98 EUR" in text
    assert "<strong>44.98 EUR</strong>" in html
    assert message["To"].addresses[0].addr_spec == user["email"]
    assert message["Message-ID"] == f"<{ids['email']}@shop.test>"
    assert message["X-Trace-Id"] == event["trace_id"]
    row = await repository.get_notification(pool, ids["email"])
    assert row is not None
    assert (row["status"], row["provider_message_id"]) == ("sent", f"<{ids['email']}@shop.test>")
    assert await attempts_of(pool, ids["email"]) == ["sent"]


async def test_sms_and_push_reach_the_provider_when_the_user_enabled_them(
    pool: asyncpg.Pool, deps: DeliveryDeps, provider: FakeProvider
) -> None:
    user = contact(
        notification_preferences={"email": True, "sms": True, "push": True}, push_token="device-token-123"
    )
    event = order_created_event(user)
    ids = await fanned_out(pool, event)
    assert sorted(ids) == ["email", "push", "sms"]

    assert await deliver(deps, ids["sms"]) == "sent"
    assert await deliver(deps, ids["push"]) == "sent"

    [sms] = provider.received("sms")
    assert sms["to"] == user["phone"]
    assert event["data"]["order"]["id"] in sms["body"]
    assert sms["idempotency_key"] == ids["sms"]
    [push] = provider.received("push")
    assert (push["token"], push["title"]) == ("device-token-123", "Order received")
    assert push["data"]["notification_id"] == ids["push"]
    sms_row = await repository.get_notification(pool, ids["sms"])
    assert sms_row is not None
    assert sms_row["provider_message_id"] == sms["sid"]


async def test_smtp_451_then_success_sends_one_email_with_two_attempts_recorded(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    smtp.handler.data_replies.append("451 4.7.1 greylisted, try again later")
    ids = await fanned_out(pool, user_registered_event())

    with pytest.raises(TransientFailure, match="451"):
        await deliver(deps, ids["email"])
    assert await status_of(pool, ids["email"]) == "queued"

    assert await deliver(deps, ids["email"]) == "sent"
    assert len(smtp.handler.messages) == 1
    assert await attempts_of(pool, ids["email"]) == ["transient_error", "sent"]


async def test_smtp_550_fails_the_notification_without_retrying(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    smtp.handler.data_replies.append("550 5.1.1 mailbox unavailable")
    ids = await fanned_out(pool, user_registered_event())

    assert await deliver(deps, ids["email"]) == "failed"
    # A redelivered message finds it failed and leaves it alone.
    assert await deliver(deps, ids["email"]) == "failed"

    assert smtp.handler.data_commands == 1
    row = await repository.get_notification(pool, ids["email"])
    assert row is not None
    assert row["status"] == "failed"
    assert "550 5.1.1 mailbox unavailable" in row["last_error"]
    assert await attempts_of(pool, ids["email"]) == ["permanent_error"]


async def test_recipient_refusals_are_permanent_for_5xx_and_transient_for_4xx(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    smtp.handler.rcpt_replies.append("450 4.2.1 mailbox busy")
    deferred = await fanned_out(pool, user_registered_event())
    with pytest.raises(TransientFailure, match="450"):
        await deliver(deps, deferred["email"])

    smtp.handler.rcpt_replies.append("550 5.1.1 no such user")
    refused = await fanned_out(pool, user_registered_event())
    assert await deliver(deps, refused["email"]) == "failed"
    assert smtp.handler.messages == []


async def test_a_redelivered_message_sends_no_second_email(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    ids = await fanned_out(pool, user_registered_event())

    results = [await deliver(deps, ids["email"]) for _ in range(3)]

    assert results == ["sent", "sent", "sent"]
    assert len(smtp.handler.messages) == 1
    assert await attempts_of(pool, ids["email"]) == ["sent"]


async def test_concurrent_duplicates_send_once(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    smtp.handler.delay_s = 0.3
    ids = await fanned_out(pool, user_registered_event())

    results = await asyncio.gather(
        deliver(deps, ids["email"]), deliver(deps, ids["email"]), return_exceptions=True
    )

    assert sorted(type(r).__name__ for r in results) == ["NotificationBusy", "str"]
    assert len(smtp.handler.messages) == 1


async def test_provider_5xx_and_429_are_transient_and_429_keeps_retry_after(
    pool: asyncpg.Pool, deps: DeliveryDeps, provider: FakeProvider
) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    ids = await fanned_out(pool, user_registered_event(user))

    await provider.fail("sms", status=503, count=1)
    with pytest.raises(TransientFailure, match="HTTP 503") as unavailable:
        await deliver(deps, ids["sms"])
    assert unavailable.value.retry_after_s is None

    await provider.fail("sms", status=429, count=1, retry_after=7)
    with pytest.raises(TransientFailure, match="HTTP 429") as limited:
        await deliver(deps, ids["sms"])
    assert limited.value.retry_after_s == 7

    assert await deliver(deps, ids["sms"]) == "sent"
    assert await attempts_of(pool, ids["sms"]) == ["transient_error", "transient_error", "sent"]


async def test_provider_timeout_is_transient(
    pool: asyncpg.Pool, deps: DeliveryDeps, provider: FakeProvider
) -> None:
    user = contact(
        notification_preferences={"email": True, "sms": False, "push": True}, push_token="tok-12345678"
    )
    ids = await fanned_out(pool, user_registered_event(user))
    await provider.fail("push", status=200, count=1, delay_s=3)  # slower than provider_timeout_s=2

    with pytest.raises(TransientFailure, match="Timeout"):
        await deliver(deps, ids["push"])


async def test_provider_4xx_fails_the_notification(
    pool: asyncpg.Pool, deps: DeliveryDeps, provider: FakeProvider
) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    ids = await fanned_out(pool, user_registered_event(user))
    await provider.fail("sms", status=400, count=1)

    assert await deliver(deps, ids["sms"]) == "failed"
    row = await repository.get_notification(pool, ids["sms"])
    assert row is not None
    assert "HTTP 400" in row["last_error"]
    assert provider.received("sms") == []


async def test_a_broken_template_edit_is_not_loaded_and_the_last_good_one_is_sent(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, templates_dir: Path
) -> None:
    (templates_dir / "email" / "user.registered.subject.txt").write_text("Welcome {{ user.name ")
    assert not deps.renderer.reload().loaded
    ids = await fanned_out(pool, user_registered_event())

    assert await deliver(deps, ids["email"]) == "sent"

    [message] = smtp.handler.messages
    assert message["Subject"] == "Welcome, Ada Lovelace"
    assert await attempts_of(pool, ids["email"]) == ["sent"]


async def test_a_template_error_holds_the_notification_with_a_clear_reason(
    pool: asyncpg.Pool, smtp: SmtpServer, templates_dir: Path, deps: DeliveryDeps
) -> None:
    # The sample covers `nickname`, the real user does not: only a real render can find that.
    sample = templates_dir / "samples" / "user.registered.json"
    sample.write_text(
        sample.read_text().replace('"name": "Ada Lovelace",', '"name": "Ada", "nickname": "A",')
    )
    (templates_dir / "email" / "user.registered.text.txt").write_text("Hello\n{{ user.nickname }}\n")
    assert deps.renderer.reload().loaded
    ids = await fanned_out(pool, user_registered_event())

    assert await deliver(deps, ids["email"]) == "held"

    row = await repository.get_notification(pool, ids["email"])
    assert row is not None
    assert row["status"] == "held"
    assert row["last_error"].startswith("held until the templates are fixed: template error: ")
    assert "email/user.registered.text.txt line 2" in row["last_error"]
    assert "nickname" in row["last_error"]
    assert await attempts_of(pool, ids["email"]) == ["held"]
    assert smtp.handler.messages == []


async def test_user_data_is_shown_literally_and_cannot_inject_headers(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    name = "{{7*7}} <script>alert(1)</script>\r\nBcc: victim@example.net"
    user = contact(name=name)
    ids = await fanned_out(pool, user_registered_event(user))

    assert await deliver(deps, ids["email"]) == "sent"

    [message] = smtp.handler.messages
    assert message["Bcc"] is None
    assert message["Subject"] == "Welcome, {{7*7}} <script>alert(1)</script> Bcc: victim@example.net"
    assert smtp.handler.envelopes[0][1] == [user["email"]]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Hello {{7*7}} <script>alert(1)</script>" in text
    assert "49" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html


async def test_a_stale_sending_row_is_taken_over_and_the_lost_attempt_recorded(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    ids = await fanned_out(pool, user_registered_event())
    async with pool.acquire() as conn:  # a worker claims it and dies
        assert await repository.claim(conn, ids["email"], lease_s=0.2, revive_dead=False) is not None

    with pytest.raises(NotificationBusy):
        await deliver(deps, ids["email"])
    await asyncio.sleep(0.3)
    assert await deliver(deps, ids["email"]) == "sent"

    assert len(smtp.handler.messages) == 1
    assert await attempts_of(pool, ids["email"]) == ["interrupted", "sent"]


async def test_a_dead_notification_is_sent_only_by_a_replay(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    ids = await fanned_out(pool, user_registered_event())
    assert await repository.mark_dead(pool, ids["email"], "retries exhausted: test")

    with pytest.raises(NotificationDead):
        await deliver(deps, ids["email"])
    assert smtp.handler.messages == []

    assert await deliver(deps, ids["email"], replay=True) == "sent"
    assert await deliver(deps, ids["email"], replay=True) == "sent"
    assert len(smtp.handler.messages) == 1
