"""The order lifecycle: which status may follow which, how a change is written, and what the
``orders.process`` worker decides for a new order. No HTTP client here (the worker imports it).

A change is one transaction with the order row locked: the status, a history row, and the
event (``order.status_changed``, or ``order.cancelled``) through the outbox. The processing of a
new order writes the same three in one statement, conditional on the order still being PENDING.

``process_order_created`` takes the ``order.created`` event envelope and decides:

- total greater than ``max_order_total`` → REJECTED, with the reason naming both amounts;
- otherwise → CONFIRMED,

recorded with ``changed_by = "orders.process"``. Redelivery is harmless: an order that is no
longer PENDING (already processed, cancelled by its owner, confirmed by an admin) is left alone
and its current status returned. With ``hold_s`` the change's event is held in the outbox for
the caller to hand on (``held_until``, ``common.outbox``), and a redelivery takes over the events
an earlier run held and died with. The limit is one number for every currency: a deliberate
simplification, documented in docs/events.md.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from common.db import Connection
from common.errors import Conflict, NotFound
from common.events import ORDER_CANCELLED, ORDER_CREATED, ORDER_STATUS_CHANGED, PROCESS_ORDER, new_event
from common.logging import current_trace_id
from common.outbox import OUTBOX_CHANNEL, add_event, take_over_held
from order_api import repository
from order_api.schemas import ItemOut, OrderOut, OrderStatus

log = structlog.get_logger(__name__)
PRODUCER = "order_api"
PROCESSOR = PROCESS_ORDER.actor_name
S = OrderStatus

# Who may ask for which target is decided separately (service.OWNER_TARGETS, processing below).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.CONFIRMED, S.CANCELLED, S.REJECTED}),
    S.CONFIRMED: frozenset({S.SHIPPED, S.CANCELLED}),
    S.SHIPPED: frozenset({S.DELIVERED}),
    S.DELIVERED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}

ORDER_TRANSITIONS = Counter(
    "order_status_transitions_total",
    "Committed order status changes (API and orders.process)",
    ["service", "from_status", "to_status"],
)


def count_transition(from_status: OrderStatus, to_status: OrderStatus) -> None:
    """Call once the transaction of the change has committed, so a rollback is never counted."""
    ORDER_TRANSITIONS.labels(PRODUCER, from_status.value, to_status.value).inc()


def order_out(
    row: asyncpg.Record | Mapping[str, Any], items: Sequence[asyncpg.Record | Mapping[str, Any]]
) -> OrderOut:
    return OrderOut(
        id=row["id"],
        user_id=row["user_id"],
        status=OrderStatus(row["status"]),
        currency=row["currency"],
        items=[
            ItemOut(
                sku=i["sku"],
                name=i["name"],
                quantity=i["quantity"],
                unit_price=i["unit_price"],
                line_total=i["line_total"],
            )
            for i in items
        ],
        total=row["total"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass(frozen=True)
class Processed:
    """What ``process_order_created`` decided, and the held events its caller is to hand on."""

    status: str
    held_events: list[dict[str, Any]] = field(default_factory=list)


def _change_data(
    order: OrderOut,
    contact: Mapping[str, Any],
    current: OrderStatus,
    target: OrderStatus,
    reason: str | None,
    changed_by: str,
) -> dict[str, Any]:
    """The ``data`` of an order.status_changed / order.cancelled event (docs/events.md)."""
    return {
        "order": order.model_dump(mode="json"),
        "user": dict(contact),
        "from_status": current.value,
        "to_status": target.value,
        "reason": reason,
        "changed_by": changed_by,
    }


async def apply_transition(
    conn: Connection,
    row: asyncpg.Record,
    target: OrderStatus,
    *,
    changed_by: str,
    reason: str | None,
    trace_id: str | None = None,
) -> OrderOut:
    """Move a locked order to ``target``, record history, emit the event; Conflict if not allowed."""
    current = OrderStatus(row["status"])
    if target not in TRANSITIONS[current]:
        raise Conflict(f"an order in status {current} cannot become {target}")
    updated, items = await repository.change_status(
        conn, row["id"], from_status=current, to_status=target, changed_by=changed_by, reason=reason
    )
    order = order_out(updated, items)
    data = _change_data(order, json.loads(row["contact"]), current, target, reason, changed_by)
    event_type = ORDER_CANCELLED if target is S.CANCELLED else ORDER_STATUS_CHANGED
    await add_event(conn, event_type, order.id, data, producer=PRODUCER, trace_id=trace_id)
    log.info("order_status_changed", **{"order.id": order.id}, from_status=current, to_status=target)
    return order


def _order_id(event: dict[str, Any]) -> str:
    if event.get("event_type") != ORDER_CREATED:
        raise ValueError(f"expected an {ORDER_CREATED} event, got {event.get('event_type')!r}")
    try:
        return str(uuid.UUID(str(event["data"]["order"]["id"])))
    except (KeyError, TypeError, ValueError):
        raise ValueError("the event carries no valid data.order.id") from None


def _decide(total: Decimal, currency: str, max_order_total: Decimal) -> tuple[OrderStatus, str]:
    if total > max_order_total:
        return (
            S.REJECTED,
            f"order total {total:.2f} {currency} exceeds the limit of {max_order_total:.2f}",
        )
    return S.CONFIRMED, "accepted by automatic processing"


def _as_created(event: dict[str, Any]) -> tuple[OrderOut, dict[str, Any]] | None:
    """The pending order and its contact as the event carries them; None if it does not."""
    try:
        order = OrderOut.model_validate(event["data"]["order"])
        contact = dict(event["data"]["user"])
    except (KeyError, TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    return (order, contact) if order.status is S.PENDING else None


def _decision(
    order: OrderOut,
    contact: Mapping[str, Any],
    event: dict[str, Any],
    *,
    max_order_total: Decimal,
    hold_s: float | None,
) -> repository.PendingDecision:
    target, reason = _decide(order.total, order.currency, max_order_total)
    now = datetime.now(UTC)
    decided = order.model_copy(update={"status": target, "updated_at": now})
    changed = new_event(
        ORDER_STATUS_CHANGED,
        _change_data(decided, contact, S.PENDING, target, reason, PROCESSOR),
        producer=PRODUCER,
        trace_id=event.get("trace_id") or current_trace_id(),
    )
    return repository.PendingDecision(
        order_id=order.id,
        total=order.total,
        currency=order.currency,
        to_status=target.value,
        updated_at=now,
        changed_by=PROCESSOR,
        reason=reason,
        event=changed,
        event_json=json.dumps(changed, default=str),
        hold_s=hold_s,
        channel=OUTBOX_CHANNEL,
    )


async def process_order_created(
    pool: asyncpg.Pool, event: dict[str, Any], *, max_order_total: Decimal, hold_s: float | None = None
) -> Processed:
    """Confirm or reject the order of an ``order.created`` event.

    Raises ValueError for a malformed event and NotFound if the order does not exist; both are
    permanent, so retrying them is pointless.

    One round trip as a rule: the order is decided as the event carries it (a pending order has
    not changed since it was created), and the decision written in one statement on the
    condition that the order is still PENDING with that total and currency
    (``repository.decide_pending``; the lock, the change and the event in a transaction were five,
    issue 11). An order changed meanwhile (its owner cancelled it), an event that does not carry
    it, or one that does not match it, is read from the database and decided from there.
    """
    order_id = _order_id(event)
    created = _as_created(event)
    decision = None
    if created is not None and created[0].id == order_id:
        decision = _decision(*created, event, max_order_total=max_order_total, hold_s=hold_s)
        if not await repository.decide_pending(pool, decision):
            decision = None
    while decision is None:
        detail = await repository.get_order_detail(pool, order_id)
        if detail is None:
            raise NotFound(f"order {order_id} does not exist")
        row = detail.order
        current = OrderStatus(row["status"])
        if current is not S.PENDING:
            log.info("order_already_processed", **{"order.id": order_id}, status=current)
            held = [] if hold_s is None else await take_over_held(pool, order_id, hold_s=hold_s)
            return Processed(current.value, held)
        decision = _decision(
            order_out(row, detail.items),
            json.loads(row["contact"]),
            event,
            max_order_total=max_order_total,
            hold_s=hold_s,
        )
        if not await repository.decide_pending(pool, decision):
            decision = None
    target = OrderStatus(decision.to_status)
    count_transition(S.PENDING, target)
    log.info("order_status_changed", **{"order.id": order_id}, from_status=S.PENDING, to_status=target)
    # What a consumer would get from the queue: the envelope as JSON, not as Python built it.
    held_events = [] if hold_s is None else [json.loads(decision.event_json)]
    return Processed(target.value, held_events)
