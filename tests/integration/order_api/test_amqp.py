"""common.amqp: confirmed, persistent, mandatory publishing, and queues the workers agree with
(quorum queues with a delivery limit)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from common.amqp import DELIVERY_LIMIT, AmqpUnavailable, ConfirmingPublisher, PublishRejected
from common.events import Route, event_message, new_event
from tests.integration.workers.management import queue_info, scratch_vhost
from workers.rabbitmq import QuorumRabbitmqBroker


@pytest.fixture
async def publisher(orders_vhost: str) -> AsyncIterator[ConfirmingPublisher]:
    confirming = ConfirmingPublisher(f"amqp://guest:guest@127.0.0.1:5672/{orders_vhost}")
    await confirming.connect()
    yield confirming
    await confirming.close()


def _consume_with_dramatiq(url: str, queue: str) -> tuple[dramatiq.Message[Any] | None, int]:
    """What a worker does: declare the queue itself (its broker's arguments), then consume one message."""
    broker = QuorumRabbitmqBroker(url=url)
    try:
        broker.declare_queue(queue, ensure=True)
        consumer = broker.consume(queue, prefetch=1, timeout=3000)
        try:
            proxy = next(consumer)
            if proxy is None:
                return None, 0
            consumer.ack(proxy)
            return proxy._message, proxy.options.get("redelivered", 0)
        finally:
            consumer.close()
    finally:
        broker.close()


async def test_dramatiq_declares_and_consumes_the_queues_we_declared(
    publisher: ConfirmingPublisher, orders_vhost: str
) -> None:
    queue = f"compat_{uuid.uuid4().hex[:8]}"
    await publisher.declare_dramatiq_queue(queue)
    event = new_event("order.created", {"order": {"id": "x"}}, producer="test", trace_id=None)
    message = event_message(event, Route(queue, "orders.process"))
    await publisher.publish(queue, message.encode(), message_id=message.message_id)
    url = f"amqp://guest:guest@127.0.0.1:5672/{orders_vhost}"
    # Dramatiq re-declares with its own arguments: any difference would be PRECONDITION_FAILED.
    received, _ = await asyncio.to_thread(_consume_with_dramatiq, url, queue)
    assert received is not None
    assert received.message_id == message.message_id
    assert received.actor_name == "orders.process"
    assert list(received.args) == [event]


async def test_a_message_no_queue_takes_is_rejected_and_the_channel_survives(
    publisher: ConfirmingPublisher,
) -> None:
    with pytest.raises(PublishRejected, match="NO_ROUTE"):
        await publisher.publish(f"missing_{uuid.uuid4().hex}", b"{}", message_id=uuid.uuid4().hex)
    assert publisher.is_connected
    queue = f"after_{uuid.uuid4().hex[:8]}"
    await publisher.declare_dramatiq_queue(queue)
    await publisher.publish(queue, b"{}", message_id=uuid.uuid4().hex)


async def test_an_unreachable_broker_fails_fast_as_unavailable() -> None:
    closed = ConfirmingPublisher("amqp://guest:guest@127.0.0.1:1/", connect_timeout_s=2)
    started = time.perf_counter()
    with pytest.raises(AmqpUnavailable):
        await closed.connect()
    assert time.perf_counter() - started < 1
    assert not closed.is_connected
    with pytest.raises(AmqpUnavailable, match="not connected"):
        await closed.publish("orders", b"{}", message_id="m")


async def test_wrong_credentials_are_unavailable_not_a_crash(orders_vhost: str) -> None:
    wrong = ConfirmingPublisher(f"amqp://guest:wrong@127.0.0.1:5672/{orders_vhost}", connect_timeout_s=3)
    with pytest.raises(AmqpUnavailable):
        await wrong.connect()


async def test_the_queues_are_quorum_queues_with_a_delivery_limit_and_their_dead_letter_queue(
    publisher: ConfirmingPublisher, orders_vhost: str
) -> None:
    queue = f"quorum_{uuid.uuid4().hex[:8]}"
    await publisher.declare_dramatiq_queue(queue)

    work, delayed, dead = (queue_info(orders_vhost, name) for name in (queue, f"{queue}.DQ", f"{queue}.XQ"))
    for declared in (work, delayed):
        assert declared["type"] == "quorum"
        assert declared["durable"] is True
        assert declared["arguments"]["x-delivery-limit"] == DELIVERY_LIMIT
        assert declared["arguments"]["x-dead-letter-routing-key"] == f"{queue}.XQ"
        assert declared["arguments"]["x-dead-letter-strategy"] == "at-least-once"
    assert dead["type"] == "quorum"
    assert dead["arguments"] == {"x-queue-type": "quorum", "x-message-ttl": 7 * 86_400_000}


async def test_a_classic_queue_of_an_older_version_is_refused_with_the_migration_hint() -> None:
    with scratch_vhost("amqp_classic") as vhost:
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        # Dramatiq's stock broker declares classic queues, as every earlier version did.
        await asyncio.to_thread(_declare_classic, url, "orders")
        publisher = ConfirmingPublisher(url)
        await publisher.connect()
        try:
            hint = r"PRECONDITION_FAILED.*python -m workers\.queues migrate"
            with pytest.raises(AmqpUnavailable, match=hint):
                await publisher.declare_dramatiq_queue("orders")
        finally:
            await publisher.close()


def _declare_classic(url: str, queue: str) -> None:
    broker = RabbitmqBroker(url=url)
    try:
        broker.declare_queue(queue, ensure=True)
    finally:
        broker.close()
