"""Enqueueing deliveries from the API: a Dramatiq-format message published with aiormq.

``Actor.send`` would block the event loop on pika, so the API publishes the JSON body Dramatiq
itself would publish, on a confirm channel with ``mandatory`` (``common.amqp``). A message is
only reported queued once RabbitMQ has confirmed it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import structlog

from common.amqp import AmqpUnavailable, ConfirmingPublisher, PublishRejected

log = structlog.get_logger(__name__)
NOTIFICATIONS_QUEUE = "notifications"
DELIVER_ACTOR = "notifications.deliver"


class EnqueueFailed(Exception):
    """RabbitMQ did not confirm the message."""


def deliver_message(notification_id: str, *, trace_id: str | None) -> dict[str, Any]:
    """The body ``notifications.deliver.send(notification_id)`` would publish."""
    options = {"trace_id": trace_id} if trace_id else {}
    return {
        "queue_name": NOTIFICATIONS_QUEUE,
        "actor_name": DELIVER_ACTOR,
        "args": [notification_id],
        "kwargs": {},
        "options": options,
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }


class DeliveryQueue:
    def __init__(self, amqp_url: str) -> None:
        self._publisher = ConfirmingPublisher(amqp_url)
        self._connecting = asyncio.Lock()

    async def _ensure_connected(self) -> None:
        async with self._connecting:
            if not self._publisher.is_connected:
                await self._publisher.connect()
                await self._publisher.declare_dramatiq_queue(NOTIFICATIONS_QUEUE)

    async def enqueue_delivery(self, notification_id: str, *, trace_id: str | None) -> None:
        message = deliver_message(notification_id, trace_id=trace_id)
        # Dramatiq's JSON encoder writes compact UTF-8 JSON; the workers decode it the same way.
        body = json.dumps(message, separators=(",", ":")).encode()
        last_error: Exception | None = None
        # One reconnect: a broker restart since the last publish leaves a dead connection behind.
        for _ in range(2):
            try:
                await self._ensure_connected()
                await self._publisher.publish(NOTIFICATIONS_QUEUE, body, message_id=message["message_id"])
                return
            except (AmqpUnavailable, PublishRejected) as exc:
                last_error = exc
                log.warning("enqueue_delivery_failed", notification_id=notification_id, error=str(exc))
        raise EnqueueFailed(str(last_error))

    async def check(self) -> None:
        await self._ensure_connected()

    async def close(self) -> None:
        await self._publisher.close()
