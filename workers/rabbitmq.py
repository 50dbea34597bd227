"""Dramatiq's RabbitMQ broker with quorum queues and dead letters that say why they died.

``QuorumRabbitmqBroker`` declares ``Q``, ``Q.DQ`` and ``Q.XQ`` with ``common.amqp``'s arguments
(the ones the outbox relay, the notifier API and the DLQ tool use too): quorum queues, and a
delivery limit on ``Q`` and ``Q.DQ`` so that a message whose consumer keeps dying goes to
``Q.XQ`` instead of killing every worker in turn.

Its consumer does not let RabbitMQ dead-letter a failed message (that moves it unchanged): it
publishes a copy annotated with ``workers.deadletters.failure_record`` to ``Q.XQ``, waits for
RabbitMQ's confirm, and only then acks the original. A crash in between leaves the original to
be redelivered (at least once: a second dead letter at worst, never none). If the annotated
publish fails, it falls back to the plain reject, so the message still reaches ``Q.XQ``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pika
import pika.exceptions
import structlog
from dramatiq import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import xq_name
from dramatiq.errors import ConnectionClosed

from common.amqp import DELIVERY_LIMIT, dead_letter_queue_arguments, dramatiq_queue_arguments
from workers.deadletters import dead_letter_options, error_headers, failure_record, failures_of

log = structlog.get_logger(__name__)
PUBLISH_ATTEMPTS = 2


class QuorumRabbitmqBroker(RabbitmqBroker):
    """``delivery_limit`` other than the default is for tests; every declarer must agree on it."""

    def __init__(self, *, delivery_limit: int = DELIVERY_LIMIT, **kwargs: Any) -> None:
        if kwargs.get("max_priority"):
            raise ValueError("quorum queues do not support x-max-priority")
        super().__init__(**kwargs)
        self.delivery_limit = delivery_limit

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return AnnotatingConsumer

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments = dict(dramatiq_queue_arguments(queue_name))
        arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments=dict(dead_letter_queue_arguments())
        )

    def publish_confirmed(self, routing_key: str, body: bytes, properties: pika.BasicProperties) -> None:
        """Publish on this thread's confirm channel; raises if RabbitMQ did not take it."""
        if not self.confirm_delivery:
            raise RuntimeError("dead letters need confirm_delivery=True")
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self.channel.basic_publish(
                    exchange="", routing_key=routing_key, body=body, properties=properties, mandatory=True
                )
                return
            except pika.exceptions.AMQPConnectionError:
                del self.connection  # a fresh connection for the next attempt
                if attempt == PUBLISH_ATTEMPTS:
                    raise
            except pika.exceptions.AMQPChannelError:
                del self.channel
                raise


class AnnotatingConsumer(_RabbitmqConsumer):
    """Rejects a failed message by publishing its annotated copy to ``Q.XQ``, then acking it.

    ``nack`` runs on the worker thread that processed the message (Dramatiq calls the consumer's
    post-processing from there), while the exception is still attached to the message.
    """

    broker: QuorumRabbitmqBroker

    def nack(self, message: MessageProxy) -> None:
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            self.logger.warning("Failed to nack message: not in known tags.")
            return
        try:
            self._dead_letter(message)
        except Exception as exc:  # the plain reject still dead-letters it, only without the reason
            log.error(
                "dead_letter_annotation_failed",
                message_id=message.message_id,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            self._reject(message._tag)
            return
        try:
            self.connection.add_callback_threadsafe(partial(self.channel.basic_ack, message._tag))
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            # The original comes back and fails again: a duplicate dead letter, nothing lost.
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _reject(self, tag: int) -> None:
        try:
            self._nack(tag)  # type: ignore[no-untyped-call]
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _dead_letter(self, message: MessageProxy) -> None:
        record = failure_record(self.broker, message, self.queue_name)
        options = dead_letter_options(message.options, record)
        annotated = message._message.copy(options=options)
        # copy() merges options; the ones dropped for the dead letter must really go.
        annotated.options.pop("traceback", None)
        history = failures_of(options)[:-1]
        properties = pika.BasicProperties(
            delivery_mode=2,
            message_id=message.message_id,
            content_type="application/json",
            headers=error_headers(record, history),
        )
        self.broker.publish_confirmed(xq_name(self.queue_name), annotated.encode(), properties)
        log.info(
            "message_dead_lettered",
            message_id=message.message_id,
            actor=message.actor_name,
            queue=self.queue_name,
            reason=record["reason"],
            error_type=record["type"],
        )
