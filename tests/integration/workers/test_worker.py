"""A real Dramatiq Worker in-process on the test vhost: the messages the outbox relay publishes,
retries, the dead-letter queue and replays."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from common.events import FAN_OUT_NOTIFICATIONS, event_message
from notifier import repository
from notifier.fanout import notification_id_for
from tests.integration.notifier.conftest import FakeProvider
from tests.integration.notifier.helpers import (
    SmtpServer,
    contact,
    order_created_event,
    user_registered_event,
    wait_until,
)
from tests.integration.workers.conftest import StartWorker
from workers.actors import deliver
from workers.dlq import DeadLetterQueues

SMS_USER: dict[str, Any] = {"notification_preferences": {"email": True, "sms": True, "push": False}}


async def sms_that_cannot_be_sent(
    start_worker: StartWorker, provider: FakeProvider
) -> tuple[RabbitmqBroker, str]:
    """A user.registered fan-out whose SMS meets a provider answering 503; (broker, the SMS's id)."""
    await provider.fail("sms", status=503)
    broker = await start_worker()
    event = user_registered_event(contact(**SMS_USER))
    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))
    return broker, notification_id_for(event["event_id"], "sms")


async def publish(broker: RabbitmqBroker, body: Message[Any] | dict[str, Any]) -> None:
    """Publish a message as the outbox relay does (common.events.event_message), or a raw body."""
    message = body if isinstance(body, Message) else Message.decode(json.dumps(body).encode())
    await asyncio.to_thread(broker.enqueue, message)


async def status_of(pool: asyncpg.Pool, notification_id: str) -> str | None:
    row = await repository.get_notification(pool, notification_id)
    return None if row is None else str(row["status"])


async def wait_for_status(
    pool: asyncpg.Pool, notification_id: str, expected: str, timeout_s: float = 20
) -> None:
    async def reached() -> bool:
        return await status_of(pool, notification_id) == expected

    await wait_until(reached, timeout_s=timeout_s)


async def outcomes(pool: asyncpg.Pool, notification_id: str) -> list[str]:
    return [a["outcome"] for a in await repository.list_attempts(pool, notification_id)]


async def test_an_event_from_the_outbox_relay_is_fanned_out_and_delivered_on_every_channel(
    start_worker: StartWorker, pool: asyncpg.Pool, smtp: SmtpServer, provider: FakeProvider
) -> None:
    broker = await start_worker()
    user = contact(
        notification_preferences={"email": True, "sms": True, "push": True}, push_token="device-abc-123"
    )
    event = order_created_event(user)

    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))

    for channel in ("email", "sms", "push"):
        await wait_for_status(pool, notification_id_for(event["event_id"], channel), "sent")
    [email] = smtp.handler.messages
    assert event["data"]["order"]["id"] in email["Subject"]
    assert len(provider.received("sms")) == 1
    assert len(provider.received("push")) == 1


async def test_a_redelivered_fanout_and_deliver_send_one_email(
    start_worker: StartWorker, pool: asyncpg.Pool, smtp: SmtpServer
) -> None:
    broker = await start_worker()
    event = user_registered_event()
    body = event_message(event, FAN_OUT_NOTIFICATIONS)
    email_id = notification_id_for(event["event_id"], "email")

    await publish(broker, body)
    await wait_for_status(pool, email_id, "sent")
    await publish(broker, body)  # the relay published it again (same message id)
    await asyncio.to_thread(deliver.send, email_id)
    await asyncio.to_thread(broker.join, "notifications", timeout=10_000)
    await asyncio.sleep(0.3)

    assert len(smtp.handler.with_message_id(f"<{email_id}@shop.test>")) == 1
    assert await outcomes(pool, email_id) == ["sent"]


async def test_smtp_451_is_retried_by_the_worker_and_sends_one_email(
    start_worker: StartWorker, pool: asyncpg.Pool, smtp: SmtpServer
) -> None:
    smtp.handler.data_replies.append("451 4.3.2 try again later")
    broker = await start_worker()
    event = user_registered_event()

    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))

    email_id = notification_id_for(event["event_id"], "email")
    await wait_for_status(pool, email_id, "sent")
    assert len(smtp.handler.messages) == 1
    assert await outcomes(pool, email_id) == ["transient_error", "sent"]


async def test_smtp_550_fails_once_and_is_not_dead_lettered(
    start_worker: StartWorker, pool: asyncpg.Pool, smtp: SmtpServer, dead_letters: DeadLetterQueues
) -> None:
    smtp.handler.data_replies.append("550 5.7.1 rejected")
    broker = await start_worker()
    event = user_registered_event()

    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))

    email_id = notification_id_for(event["event_id"], "email")
    await wait_for_status(pool, email_id, "failed")
    await asyncio.to_thread(broker.join, "notifications", timeout=10_000)
    assert smtp.handler.data_commands == 1
    assert await asyncio.to_thread(dead_letters.list) == []


async def test_provider_down_past_the_retry_budget_goes_dead_and_a_replay_delivers_once(
    start_worker: StartWorker,
    pool: asyncpg.Pool,
    provider: FakeProvider,
    dead_letters: DeadLetterQueues,
) -> None:
    broker, sms_id = await sms_that_cannot_be_sent(start_worker, provider)

    await wait_for_status(pool, sms_id, "dead")
    assert await outcomes(pool, sms_id) == ["transient_error"] * 3  # first try + WORKER_MAX_RETRIES=2
    [letter] = await wait_until(lambda: asyncio.to_thread(dead_letters.list))
    assert letter.queue == "notifications.XQ"
    assert letter.message is not None
    assert (letter.message.actor_name, letter.message.args) == ("notifications.deliver", (sms_id,))

    await provider.recover()
    report = await asyncio.to_thread(dead_letters.replay, {letter.id})

    assert report.replayed == [letter.id]
    await wait_for_status(pool, sms_id, "sent")
    await asyncio.to_thread(broker.join, "notifications", timeout=10_000)
    await asyncio.sleep(0.3)
    assert len(provider.received("sms")) == 1
    assert await outcomes(pool, sms_id) == ["transient_error"] * 3 + ["sent"]
    assert await asyncio.to_thread(dead_letters.list) == []


async def test_a_replayed_message_that_dies_again_is_refused_past_the_replay_limit(
    start_worker: StartWorker,
    pool: asyncpg.Pool,
    provider: FakeProvider,
    dead_letters: DeadLetterQueues,
) -> None:
    _broker, sms_id = await sms_that_cannot_be_sent(start_worker, provider)
    [letter] = await wait_until(lambda: asyncio.to_thread(dead_letters.list))

    first = await asyncio.to_thread(dead_letters.replay, None, max_replays=1)
    assert first.replayed == [letter.id]
    # It fails all over again and dies again, its replay counted in the message.
    [again] = await wait_until(lambda: asyncio.to_thread(dead_letters.list))
    assert (again.id, again.replays) == (letter.id, 1)
    await wait_for_status(pool, sms_id, "dead")

    second = await asyncio.to_thread(dead_letters.replay, None, max_replays=1)

    assert second.replayed == []
    assert [message_id for message_id, _ in second.refused] == [letter.id]
    assert [d.id for d in await asyncio.to_thread(dead_letters.list)] == [letter.id]
    assert await outcomes(pool, sms_id) == ["transient_error"] * 6


async def test_an_event_that_breaks_the_contract_goes_to_the_dead_letter_queue_untried(
    start_worker: StartWorker, dead_letters: DeadLetterQueues
) -> None:
    broker = await start_worker()
    event = user_registered_event()
    del event["data"]["user"]["email"]

    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))

    [letter] = await wait_until(lambda: asyncio.to_thread(dead_letters.list))
    assert letter.message is not None
    assert letter.message.actor_name == "notifications.fanout"
    assert "retries" not in letter.message.options
