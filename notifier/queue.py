"""Enqueueing deliveries from async code: a ``notifications.deliver`` message on the one publisher.

``Actor.send`` would block the event loop on pika, so the notifier API (and the workers' fan-out,
``workers.resources``) publish the message Dramatiq itself would publish
(``common.events.deliver_message``) through ``common.amqp.DramatiqPublisher``: confirmed and
``mandatory``, so a message is only reported queued once RabbitMQ has taken it.
"""

from __future__ import annotations

import structlog

from common.amqp import AmqpUnavailable, DramatiqPublisher, PublishRejected
from common.errors import ServiceError
from common.events import DELIVER_NOTIFICATION, deliver_message

log = structlog.get_logger(__name__)


class EnqueueFailed(ServiceError):
    """RabbitMQ did not confirm the message."""


class DeliveryQueue:
    def __init__(self, amqp_url: str) -> None:
        # A publisher of its own, declaring only the queue it publishes to.
        self._publisher = DramatiqPublisher(amqp_url, queues=(DELIVER_NOTIFICATION.queue_name,))

    async def enqueue_delivery(
        self, notification_id: str, *, trace_id: str | None, delay_ms: int | None = None, retries: int = 0
    ) -> None:
        message = deliver_message(notification_id, trace_id=trace_id, delay_ms=delay_ms, retries=retries)
        try:
            await self._publisher.send(message, attempts=2)
        except (AmqpUnavailable, PublishRejected) as exc:
            log.warning("enqueue_delivery_failed", notification_id=notification_id, error=str(exc))
            raise EnqueueFailed(str(exc)) from exc

    async def check(self) -> None:
        await self._publisher.ensure_ready()

    async def close(self) -> None:
        await self._publisher.close()
