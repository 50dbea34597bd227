"""Publishing to RabbitMQ with aiormq on a confirm channel: a message counts as sent only once
the broker has acknowledged it, and a message no queue would take is a failure, not a silent drop.

Queues are declared with exactly the arguments the workers' broker uses (same names, same
arguments, ``workers.rabbitmq.QuorumRabbitmqBroker``), because RabbitMQ refuses a second
declaration with different arguments (``PRECONDITION_FAILED``). They are quorum queues
(replicated on a cluster) with a delivery limit; see ``dramatiq_queue_arguments``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import aiormq
import structlog
from aiormq.abc import AbstractChannel, AbstractConnection
from dramatiq import Message
from dramatiq.common import dq_name, xq_name
from pamqp.commands import Basic
from pamqp.common import FieldTable

from common.errors import ServiceError
from common.events import QUEUE_NAMES

log = structlog.get_logger(__name__)
PERSISTENT = 2


class AmqpUnavailable(ServiceError):
    """The broker cannot be reached, or the connection or channel broke while talking to it."""


class PublishRejected(ServiceError):
    """The broker answered but did not take the message (returned as unroutable, or nacked)."""


# How long ``Q.XQ`` keeps a dead letter: Dramatiq's ``dramatiq.brokers.rabbitmq.DEAD_MESSAGE_TTL``,
# read the way it reads it (a week, or its variable). Not imported from there: that module imports
# pika, which no API uses (issue 11: 29 modules, 2 MB in each API process). tests/unit/test_imports.py
# checks that the two agree, with and without the variable.
DEAD_MESSAGE_TTL = int(os.getenv("dramatiq_dead_message_ttl", 86400000 * 7))  # noqa: SIM112 - its name

# A message redelivered this many times (its consumer crashed or lost its connection while holding
# it: a poison message) goes to ``Q.XQ`` instead of crashing the next worker. Retries do not
# count: Dramatiq retries by publishing a new message. 20 is RabbitMQ 4's default; a policy
# (``delivery-limit``) can lower it without redeclaring, the lower of the two applies.
DELIVERY_LIMIT = 20


def dramatiq_queue_arguments(queue_name: str) -> FieldTable:
    """Arguments of a work queue and of its delay queue (``Q.DQ``): dead letters go to ``Q.XQ``.

    Quorum queues, because classic queues are not replicated. ``at-least-once`` dead-lettering
    keeps a message in its queue until ``Q.XQ`` has confirmed it (it needs ``reject-publish``,
    which does nothing without a length limit). No ``x-max-priority``: quorum queues refuse it.
    """
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": xq_name(queue_name),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dead_letter_queue_arguments() -> FieldTable:
    """Arguments of ``Q.XQ``: a quorum queue too (dead letters are data), with Dramatiq's TTL.

    No delivery limit: browsing with ``workers.dlq`` returns every message it looked at, which
    counts as a delivery. (RabbitMQ 4 sets a default limit of 20; there ``-1`` would be needed.)
    """
    # Dramatiq requires a fixed TTL here: RabbitMQ expires messages head-first only.
    return {"x-queue-type": "quorum", "x-message-ttl": DEAD_MESSAGE_TTL}


def queue_family(queue_name: str) -> dict[str, FieldTable]:
    """``Q``, ``Q.DQ`` and ``Q.XQ`` with their arguments, in the order they are declared."""
    return {
        queue_name: dramatiq_queue_arguments(queue_name),
        dq_name(queue_name): dramatiq_queue_arguments(queue_name),
        xq_name(queue_name): dead_letter_queue_arguments(),
    }


MIGRATE_HINT = "a queue of an older version (classic)? run `python -m workers.queues migrate`"


class ConfirmingPublisher:
    """One connection and one confirm channel; reconnecting is the caller's decision."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, publish_timeout_s: float = 10.0) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    @property
    def is_connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def connect(self) -> None:
        await self.close()
        connection = aiormq.Connection(self._url)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await connection.connect()
                # on_return_raises: a basic.return (mandatory, no queue bound) fails the publish.
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            await self._close_quietly(connection)
            raise AmqpUnavailable(f"cannot connect to RabbitMQ: {_describe(exc)}") from exc
        self._connection, self._channel = connection, channel
        log.info("amqp_connected")

    async def declare_dramatiq_queue(self, queue_name: str) -> None:
        """Declare ``Q``, ``Q.DQ`` and ``Q.XQ`` durable, with the workers' arguments."""
        channel = self._require_channel()
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                for name, arguments in queue_family(queue_name).items():
                    await channel.queue_declare(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            await self.close()
            raise AmqpUnavailable(
                f"cannot declare queue {queue_name!r}: {_describe(exc)} ({MIGRATE_HINT})"
            ) from exc
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            await self.close()
            raise AmqpUnavailable(f"cannot declare queue {queue_name!r}: {_describe(exc)}") from exc

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str = "application/json"
    ) -> None:
        """Publish persistently to the default exchange and wait for the broker's confirm."""
        channel = self._require_channel()
        properties = Basic.Properties(
            delivery_mode=PERSISTENT, message_id=message_id, content_type=content_type
        )
        try:
            confirmation = await channel.basic_publish(
                body,
                exchange="",
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=self._publish_timeout_s,
            )
        except aiormq.exceptions.DeliveryError as exc:
            # PublishError (returned: no such queue) is a DeliveryError too; the channel stays usable.
            raise PublishRejected(f"{routing_key}: {_describe(exc)}") from exc
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            # After a timeout we cannot tell what the broker has; start over on a fresh connection.
            await self.close()
            raise AmqpUnavailable(f"publishing to {routing_key!r} failed: {_describe(exc)}") from exc
        if not isinstance(confirmation, Basic.Ack):
            raise PublishRejected(f"{routing_key}: broker answered {type(confirmation).__name__}")

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await self._close_quietly(connection)

    def _require_channel(self) -> AbstractChannel:
        if not self.is_connected or self._channel is None:
            raise AmqpUnavailable("not connected to RabbitMQ")
        return self._channel

    @staticmethod
    async def _close_quietly(connection: AbstractConnection) -> None:
        try:
            async with asyncio.timeout(2):
                await connection.close()
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            log.debug("amqp_close_failed", error=_describe(exc))


class DramatiqPublisher:
    """The one way async code puts a Dramatiq message on a queue (outbox relays, the notifier
    API, the workers' fan-out): confirmed and ``mandatory``, over one ``ConfirmingPublisher``.

    It connects on first use and declares ``queues`` (with the workers' arguments) once per
    connection, so a publish never lands nowhere. ``send`` raises ``AmqpUnavailable`` or
    ``PublishRejected``; ``attempts=2`` allows one reconnect, for a connection that a broker
    restart left dead since the last publish.
    """

    def __init__(self, url: str, *, queues: Sequence[str] = QUEUE_NAMES, **timeouts: float) -> None:
        self._publisher = ConfirmingPublisher(url, **timeouts)
        self._queues = tuple(queues)
        self._declared = False
        self._connecting = asyncio.Lock()

    @property
    def is_connected(self) -> bool:
        return self._publisher.is_connected

    async def ensure_ready(self) -> None:
        """Connected, with the queues declared; one caller connects while the others wait."""
        if self._publisher.is_connected and self._declared:
            return
        async with self._connecting:
            if not self._publisher.is_connected:
                self._declared = False
                await self._publisher.connect()
            if not self._declared:
                for queue_name in self._queues:
                    await self._publisher.declare_dramatiq_queue(queue_name)
                self._declared = True

    async def send(self, message: Message[Any], *, attempts: int = 1) -> None:
        for attempt in range(1, attempts + 1):
            try:
                await self.ensure_ready()
                await self._publisher.publish(
                    message.queue_name, message.encode(), message_id=message.message_id
                )
                return
            except PublishRejected:
                self._declared = False  # a queue may have been deleted: declare again
                if attempt == attempts:
                    raise
            except AmqpUnavailable:
                if attempt == attempts:
                    raise
            log.warning("amqp_publish_retried", queue=message.queue_name, attempt=attempt)

    async def close(self) -> None:
        await self._publisher.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
