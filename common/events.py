"""The message contract: every name and shape that crosses a queue, written once.

- Events: an envelope (id, type, time, trace id, producer) around a ``data`` object; the outbox
  relay turns each event into one Dramatiq message per route in ``ROUTES``, so the workers'
  actors receive the envelope as their single argument. ``docs/events.md`` documents each type.
- ``Contact``: what notifications need of a user, copied into events by user_api and order_api
  and read by the notifier (one model for the three of them).
- Routes: each actor's name and queue (``DELIVER_NOTIFICATION`` included). The actors are
  declared from them, the queue names and their dead-letter queues are derived from them.
- Messages: the one builder of Dramatiq messages published without ``Actor.send`` (the outbox
  relay, the notifier API, the workers' fan-out); ``dramatiq.Message.encode`` is the one encoder,
  byte-for-byte what the workers decode. ``common.amqp.DramatiqPublisher`` puts them on the queues.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dramatiq import Message
from dramatiq.common import current_millis, dq_name, xq_name
from pydantic import BaseModel, ConfigDict

from common.tracing import w3c_context

USER_REGISTERED = "user.registered"
ORDER_CREATED = "order.created"
ORDER_STATUS_CHANGED = "order.status_changed"
ORDER_CANCELLED = "order.cancelled"
# Not an outbox event: a Redis pub/sub channel on which user_api names a user that changed or
# was deleted, so order_api's contact cache drops it (order_api/contact_cache.py).
USER_CHANGED_CHANNEL = "user.changed"


class Envelope(BaseModel):
    """An event as a consumer reads it (``new_event`` writes it); unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    event_id: uuid.UUID
    event_type: str
    occurred_at: str
    trace_id: str | None = None
    data: dict[str, Any]


class Preferences(BaseModel):
    email: bool = True
    sms: bool = False
    push: bool = False


class Contact(BaseModel):
    """``docs/contracts.md`` ``Contact``; fields beyond these (a user's role, its dates) are dropped."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    email: str
    name: str
    phone: str | None = None
    notification_preferences: Preferences = Preferences()
    push_token: str | None = None

    def event_data(self) -> dict[str, Any]:
        """The JSON form events carry (``data.user``)."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Route:
    queue_name: str
    actor_name: str

    @property
    def dead_letter_queue(self) -> str:
        return xq_name(self.queue_name)


PROCESS_ORDER = Route("orders", "orders.process")
FAN_OUT_NOTIFICATIONS = Route("notifications", "notifications.fanout")
DELIVER_NOTIFICATION = Route("notifications", "notifications.deliver")
ALL_ROUTES = (PROCESS_ORDER, FAN_OUT_NOTIFICATIONS, DELIVER_NOTIFICATION)

# Which actors an event goes to (the outbox relay's table). ``orders.process`` fans out the
# notifications of its ``order.created`` itself, once the order is processed: a second message
# for the same event cost the relay a publish, RabbitMQ a message and the workers a run (issue 11).
ROUTES: dict[str, tuple[Route, ...]] = {
    USER_REGISTERED: (FAN_OUT_NOTIFICATIONS,),
    ORDER_CREATED: (PROCESS_ORDER,),
    ORDER_STATUS_CHANGED: (FAN_OUT_NOTIFICATIONS,),
    ORDER_CANCELLED: (FAN_OUT_NOTIFICATIONS,),
}
EVENT_TYPES = frozenset(ROUTES)
QUEUE_NAMES = tuple(sorted({route.queue_name for route in ALL_ROUTES}))
DEAD_LETTER_QUEUES = tuple(sorted({route.dead_letter_queue for route in ALL_ROUTES}))


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
        # W3C traceparent/tracestate of the span that wrote the event: the relay continues it.
        **w3c_context(),
        "producer": producer,
        "data": data,
    }


def message_id_for(event_id: str, actor_name: str) -> str:
    """Stable Dramatiq message id: a re-published event yields the same id for the same actor."""
    return str(uuid.uuid5(uuid.UUID(event_id), actor_name))


def dramatiq_message(
    route: Route,
    *args: Any,
    options: dict[str, Any] | None = None,
    message_id: str | None = None,
    delay_ms: int | None = None,
) -> Message[Any]:
    """The message ``actor.send(*args)`` (or ``send_with_options(delay=…)``) would publish.

    A delayed message goes to ``Q.DQ`` with an ``eta``, exactly as Dramatiq's RabbitMQ broker
    sends it; the worker moves it to ``Q`` once the eta has passed.
    """
    message_options = dict(options or {})
    # The current span's context (the relay's producer span, a worker's consumer span), unless the
    # options already carry one (a replay keeps its trace).
    if "traceparent" not in message_options:
        message_options.update(w3c_context())
    queue_name = route.queue_name
    if delay_ms is not None:
        queue_name = dq_name(queue_name)
        message_options["eta"] = current_millis() + delay_ms
    return Message(
        queue_name=queue_name,
        actor_name=route.actor_name,
        args=args,
        kwargs={},
        options=message_options,
        message_id=message_id or str(uuid.uuid4()),
    )


def event_message(event: dict[str, Any], route: Route) -> Message[Any]:
    """What the outbox relay publishes for ``event`` to one of its routes."""
    return dramatiq_message(
        route,
        event,
        options={"trace_id": event["trace_id"], "event_type": event["event_type"]},
        message_id=message_id_for(event["event_id"], route.actor_name),
    )


def deliver_message(
    notification_id: str, *, trace_id: str | None, delay_ms: int | None = None, retries: int = 0
) -> Message[Any]:
    """A ``notifications.deliver`` message; ``retries`` counts attempts already made elsewhere
    (the fan-out's first one), so the retry budget stays the same however a delivery started."""
    options: dict[str, Any] = {"trace_id": trace_id} if trace_id else {}
    if retries:
        options["retries"] = retries
    return dramatiq_message(DELIVER_NOTIFICATION, notification_id, options=options, delay_ms=delay_ms)
