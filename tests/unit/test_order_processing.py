"""The orders.process rule: over the limit → REJECTED, otherwise CONFIRMED, once (order_api.lifecycle)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, cast

import pytest

from common.errors import NotFound
from common.events import FAN_OUT_NOTIFICATIONS, ORDER_CREATED, ORDER_STATUS_CHANGED, ROUTES
from order_api.lifecycle import PROCESSOR, process_order_created
from tests.unit.fakes import FakeOrderRepository, FakePool

LIMIT = Decimal("100.00")


def created(order_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": ORDER_CREATED,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "data": {"order": {"id": order_id}},
        **changes,
    }


async def process(pool: FakePool, event: dict[str, Any]) -> str:
    return (await process_order_created(cast(Any, pool), event, max_order_total=LIMIT)).status


async def test_an_order_over_the_limit_is_rejected_naming_both_amounts(orders: FakeOrderRepository) -> None:
    pool = FakePool()
    order_id = orders.add(user_id=str(uuid.uuid4()), total="100.01", currency="GBP")
    assert await process(pool, created(order_id)) == "REJECTED"
    [entry] = orders.history
    assert entry["to_status"] == "REJECTED"
    assert entry["changed_by"] == PROCESSOR
    assert entry["reason"] == "order total 100.01 GBP exceeds the limit of 100.00"
    [event] = orders.events
    assert event["event_type"] == ORDER_STATUS_CHANGED
    assert event["data"]["to_status"] == "REJECTED"
    assert event["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_an_order_at_the_limit_is_confirmed(orders: FakeOrderRepository) -> None:
    pool = FakePool()
    order_id = orders.add(user_id=str(uuid.uuid4()), total="100.00")
    assert await process(pool, created(order_id)) == "CONFIRMED"
    assert orders.orders[order_id]["status"] == "CONFIRMED"
    assert orders.events[0]["data"]["from_status"] == "PENDING"


@pytest.mark.parametrize("status", ["CONFIRMED", "CANCELLED", "REJECTED"])
async def test_a_redelivered_event_leaves_a_decided_order_alone(
    orders: FakeOrderRepository, status: str
) -> None:
    pool = FakePool()
    order_id = orders.add(user_id=str(uuid.uuid4()), status=status, total="5000.00")
    assert await process(pool, created(order_id)) == status
    assert orders.history == []
    assert orders.events == []


async def test_processing_twice_decides_once(orders: FakeOrderRepository) -> None:
    pool = FakePool()
    order_id = orders.add(user_id=str(uuid.uuid4()))
    assert await process(pool, created(order_id)) == "CONFIRMED"
    assert await process(pool, created(order_id)) == "CONFIRMED"
    assert len(orders.history) == 1
    assert len(orders.events) == 1


async def test_an_unknown_order_is_not_found(orders: FakeOrderRepository) -> None:
    with pytest.raises(NotFound):
        await process(FakePool(), created(str(uuid.uuid4())))


@pytest.mark.parametrize(
    "event",
    [
        created(str(uuid.uuid4()), event_type="order.cancelled"),
        created("not-a-uuid"),
        {"event_type": ORDER_CREATED, "data": {}},
        {"event_type": ORDER_CREATED, "data": {"order": None}},
    ],
)
async def test_a_malformed_event_is_a_value_error(orders: FakeOrderRepository, event: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="event"):
        await process(FakePool(), event)


def test_the_status_change_orders_process_hands_on_itself_goes_to_the_notifications_fan_out_only() -> None:
    # workers.actors.process_order hands its held event to the fan-out and marks it published: an
    # event type with another route would never reach that consumer (or the actor must hand it
    # on there too).
    assert ROUTES[ORDER_STATUS_CHANGED] == (FAN_OUT_NOTIFICATIONS,)
