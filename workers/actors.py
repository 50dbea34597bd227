"""The actors: doors into the work, which lives in plain async functions beside its rules.

Each actor is declared from its route (``common.events``: the names are in every message on the
queues and in the outbox relay's table). Each is idempotent: messages are acknowledged after the
work, so any of them may be delivered twice. What a failure means is the owner's policy
(``order_api.lifecycle``, ``notifier.delivery``); this module only translates it for Dramatiq.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import dramatiq
from dramatiq.middleware import CurrentMessage

from common.errors import NotFound
from common.events import DELIVER_NOTIFICATION, FAN_OUT_NOTIFICATIONS, PROCESS_ORDER
from common.logging import bind_trace_id
from notifier import delivery
from notifier.fanout import FirstAttempts, InvalidEvent, fan_out_all
from order_api.lifecycle import process_order_created
from workers import app as _app  # noqa: F401 - builds the broker these actors bind to
from workers.broker import REPLAYS_OPTION, BlamelessRetry
from workers.resources import resources


# A malformed event (ValueError, InvalidEvent) or an order that does not exist (NotFound) cannot
# get better by retrying: straight to the dead-letter queue, where an operator can look at it.
@dramatiq.actor(
    actor_name=PROCESS_ORDER.actor_name,
    queue_name=PROCESS_ORDER.queue_name,
    throws=(ValueError, NotFound, InvalidEvent),
)
async def process_order(event: dict[str, Any]) -> None:
    # Each actor runs as its own task, so the binding stays with this message.
    bind_trace_id(event.get("trace_id"))
    current = resources()
    # The status change's event is held in the outbox and handed on here, as the relay would
    # have: a message of its own cost the relay a publish, RabbitMQ a message and the workers a
    # run (issue 11). Held for as long as an attempt's lease: if this run dies, the redelivered
    # message takes it over; if it fails for good, the relay publishes it once the hold is over.
    processed = await process_order_created(
        current.orders_pool,
        event,
        max_order_total=current.settings.max_order_total,
        hold_s=current.delivery.lease_s,
    )
    # (Its log line is the decision's: order_status_changed, or order_already_processed.)
    # The order.created notifications (common.events.ROUTES: this is their only message) and
    # those of the status change, in one insert. After the order's commit, so the notifications
    # database being away delays the e-mail, never the order; a retry finds the order processed
    # and only fans out again (both are idempotent).
    await _fan_out(event, *processed.held_events)
    for held in processed.held_events:
        current.handed_on.add(held["event_id"])


# An event that breaks the contract goes straight to the dead-letter queue for a human: retrying
# cannot fix it, and dropping it would lose it.
@dramatiq.actor(
    actor_name=FAN_OUT_NOTIFICATIONS.actor_name,
    queue_name=FAN_OUT_NOTIFICATIONS.queue_name,
    throws=(InvalidEvent,),
)
async def fanout(event: dict[str, Any]) -> None:
    bind_trace_id(event.get("trace_id"))
    await _fan_out(event)


async def _fan_out(*events: dict[str, Any]) -> None:
    # The first delivery attempt is made here (no queue hop), on the rows the insert claimed for
    # it; a deliver message only if it waits.
    current = resources()
    attempts = FirstAttempts(current.delivery.lease_s, _first_attempt_claimed)
    await fan_out_all(current.notifications_pool, events, dispatch=_first_attempt, first_attempts=attempts)


async def _first_attempt(notification_id: str, trace_id: str | None) -> str:
    return await delivery.first_attempt(resources().delivery, notification_id, trace_id, defer=_defer)


async def _first_attempt_claimed(row: asyncpg.Record) -> str:
    return await delivery.first_attempt(
        resources().delivery, row["id"], row["trace_id"], defer=_defer, claimed=row
    )


async def _defer(notification_id: str, *, trace_id: str | None, delay_ms: int | None, retries: int) -> None:
    current = resources()
    # Without the provider's Retry-After, the first retry waits as long as Retries' first would.
    delay = current.settings.worker_min_backoff_ms if delay_ms is None else delay_ms
    await current.queue.enqueue_delivery(notification_id, trace_id=trace_id, delay_ms=delay, retries=retries)


async def _delivery_given_up(notification_id: str, *, error: str) -> None:
    await delivery.retries_exhausted(resources().notifications_pool, notification_id, error)


@dramatiq.actor(
    actor_name=DELIVER_NOTIFICATION.actor_name,
    queue_name=DELIVER_NOTIFICATION.queue_name,
    throws=delivery.PERMANENT,
    on_retries_exhausted=_delivery_given_up,
)
async def deliver(notification_id: str) -> None:
    message = CurrentMessage.get_current_message()
    replay = bool(message is not None and message.options.get(REPLAYS_OPTION))
    try:
        await delivery.deliver(resources().delivery, notification_id, replay=replay)
    except Exception as exc:
        retry = delivery.retry_for(exc)
        if retry is None:
            raise
        # Retried with backoff (or after the provider's Retry-After), logged by us as a warning
        # rather than by Dramatiq as an unhandled error.
        delay_ms = None if retry.delay_s is None else int(retry.delay_s * 1000)
        retry_class = BlamelessRetry if retry.blameless else dramatiq.Retry
        raise retry_class(retry.reason, delay=delay_ms) from exc


ACTORS: list[dramatiq.Actor[Any, Any]] = [process_order, fanout, deliver]
