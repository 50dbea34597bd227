"""The actors: doors into the work, which lives in plain async functions.

Names are stable and dotted: they are in every message on the queues (and in the outbox relay's
routes, ``common.events.ROUTES``). Each actor is idempotent: messages are acknowledged after the
work, so any of them may be delivered twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from common.errors import NotFound
from common.logging import bind_trace_id
from notifier import delivery
from notifier.channels import TransientFailure
from notifier.delivery import NotificationBusy, NotificationDead
from notifier.fanout import InvalidEvent, fan_out
from order_api.processing import process_order_created
from workers import app as _app  # noqa: F401 - builds the broker these actors bind to
from workers.broker import REPLAYS_OPTION, DeliveryBusy
from workers.resources import resources

log = structlog.get_logger(__name__)


# A malformed event (ValueError) or an order that does not exist (NotFound) cannot get better by
# retrying: straight to the dead-letter queue, where an operator can look at it.
@dramatiq.actor(actor_name="orders.process", queue_name="orders", throws=(ValueError, NotFound))
async def process_order(event: dict[str, Any]) -> None:
    # Each actor runs as its own task, so the binding stays with this message.
    bind_trace_id(event.get("trace_id"))
    current = resources()
    outcome = await process_order_created(
        current.orders_pool, event, max_order_total=current.settings.max_order_total
    )
    log.info("order_processed", event_id=event.get("event_id"), outcome=outcome)


# An event that breaks the contract goes straight to the dead-letter queue for a human: retrying
# cannot fix it, and dropping it would lose it.
@dramatiq.actor(actor_name="notifications.fanout", queue_name="notifications", throws=(InvalidEvent,))
async def fanout(event: dict[str, Any]) -> None:
    bind_trace_id(event.get("trace_id"))
    await fan_out(resources().notifications_pool, event, enqueue=enqueue_delivery)


@dramatiq.actor(actor_name="notifications.deliver", queue_name="notifications", throws=(NotificationDead,))
async def deliver(notification_id: str) -> None:
    message = CurrentMessage.get_current_message()
    replay = bool(message is not None and message.options.get(REPLAYS_OPTION))
    try:
        await delivery.deliver(resources().delivery, notification_id, replay=replay)
    except TransientFailure as exc:
        # dramatiq.Retry: retried with backoff (or after the provider's Retry-After), logged
        # by us as a warning rather than by Dramatiq as an unhandled error.
        delay_ms = None if exc.retry_after_s is None else int(exc.retry_after_s * 1000)
        raise dramatiq.Retry(exc.detail, delay=delay_ms) from exc
    except NotificationBusy as exc:
        raise DeliveryBusy(str(exc), delay=int(exc.retry_after_s * 1000)) from exc


async def enqueue_delivery(notification_id: str) -> None:
    # Actor.send blocks on pika (and on the broker's confirm): never on the event loop.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(resources().publisher, deliver.send, notification_id)


ACTORS: list[dramatiq.Actor[Any, Any]] = [process_order, fanout, deliver]
