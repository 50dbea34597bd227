"""What happens to a new order: the rule the ``orders.process`` worker applies.

The workers' actor is a door; this is the room. ``process_order_created`` takes the
``order.created`` event envelope and decides, in one transaction with the order row locked:

- total greater than ``max_order_total`` → REJECTED, with the reason naming both amounts;
- otherwise → CONFIRMED.

It records the change in the status history (``changed_by = "orders.process"``) and emits
``order.status_changed`` through the outbox in the same transaction. Redelivery is harmless: an
order that is no longer PENDING (already processed, cancelled by its owner, confirmed by an
admin) is left alone and its current status returned. The limit is one number for every
currency: a deliberate simplification, documented in docs/events.md.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import structlog

from common.errors import NotFound
from common.events import ORDER_CREATED
from order_api import repository
from order_api.schemas import OrderStatus
from order_api.service import apply_transition, count_transition

PROCESSOR = "orders.process"
log = structlog.get_logger(__name__)


def _order_id(event: dict[str, Any]) -> str:
    if event.get("event_type") != ORDER_CREATED:
        raise ValueError(f"expected an {ORDER_CREATED} event, got {event.get('event_type')!r}")
    try:
        return str(uuid.UUID(str(event["data"]["order"]["id"])))
    except (KeyError, TypeError, ValueError):
        raise ValueError("the event carries no valid data.order.id") from None


async def process_order_created(
    pool: asyncpg.Pool, event: dict[str, Any], *, max_order_total: Decimal
) -> str:
    """Confirm or reject the order of an ``order.created`` event; returns the order's status.

    Raises ValueError for a malformed event and NotFound if the order does not exist; both are
    permanent, so retrying them is pointless.
    """
    order_id = _order_id(event)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.lock_order(conn, order_id)
        if row is None:
            raise NotFound(f"order {order_id} does not exist")
        current = OrderStatus(row["status"])
        if current is not OrderStatus.PENDING:
            log.info("order_already_processed", **{"order.id": order_id}, status=current)
            return current.value
        total: Decimal = row["total"]
        if total > max_order_total:
            target = OrderStatus.REJECTED
            reason = f"order total {total:.2f} {row['currency']} exceeds the limit of {max_order_total:.2f}"
        else:
            target = OrderStatus.CONFIRMED
            reason = "accepted by automatic processing"
        await apply_transition(
            conn, row, target, changed_by=PROCESSOR, reason=reason, trace_id=event.get("trace_id")
        )
    count_transition(current, target)
    return target.value
