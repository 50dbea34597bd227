"""The event contract between producers (user_api, order_api, workers) and the workers.

An event is an envelope (id, type, time, trace id, producer) around a ``data`` object. The
outbox relay turns each event into one Dramatiq message per route below, so the workers'
actors receive the envelope as their single argument. ``docs/events.md`` documents each type.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

USER_REGISTERED = "user.registered"
ORDER_CREATED = "order.created"
ORDER_STATUS_CHANGED = "order.status_changed"
ORDER_CANCELLED = "order.cancelled"


@dataclass(frozen=True)
class Route:
    queue_name: str
    actor_name: str


PROCESS_ORDER = Route("orders", "orders.process")
FAN_OUT_NOTIFICATIONS = Route("notifications", "notifications.fanout")

ROUTES: dict[str, tuple[Route, ...]] = {
    USER_REGISTERED: (FAN_OUT_NOTIFICATIONS,),
    ORDER_CREATED: (PROCESS_ORDER, FAN_OUT_NOTIFICATIONS),
    ORDER_STATUS_CHANGED: (FAN_OUT_NOTIFICATIONS,),
    ORDER_CANCELLED: (FAN_OUT_NOTIFICATIONS,),
}
EVENT_TYPES = frozenset(ROUTES)


def new_event(
    event_type: str, data: dict[str, Any], *, producer: str, trace_id: str | None
) -> dict[str, Any]:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "trace_id": trace_id or uuid.uuid4().hex,
        "producer": producer,
        "data": data,
    }


def message_id_for(event_id: str, actor_name: str) -> str:
    """Stable Dramatiq message id: a re-published event yields the same id for the same actor."""
    return str(uuid.uuid5(uuid.UUID(event_id), actor_name))


def dramatiq_message(event: dict[str, Any], route: Route) -> dict[str, Any]:
    """The JSON body Dramatiq's RabbitmqBroker would publish for ``actor.send(event)``."""
    return {
        "queue_name": route.queue_name,
        "actor_name": route.actor_name,
        "args": [event],
        "kwargs": {},
        "options": {"trace_id": event["trace_id"], "event_type": event["event_type"]},
        "message_id": message_id_for(event["event_id"], route.actor_name),
        "message_timestamp": int(time.time() * 1000),
    }
