"""orders.process on a real Worker: the order's rule, its history, its event, and the emails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from common.db import create_pool
from common.events import ORDER_CREATED, ORDER_STATUS_CHANGED, PROCESS_ORDER, ROUTES
from common.events import event_message as relay_message
from common.outbox import add_event
from notifier.fanout import notification_id_for
from order_api import repository as orders
from order_api.lifecycle import order_out, process_order_created
from tests.conftest import pg_dsn
from tests.integration.notifier.helpers import SmtpServer, contact, wait_until
from tests.integration.workers.conftest import StartWorker
from tests.integration.workers.test_worker import publish, wait_for_status
from workers.dlq import DeadLetterQueues


@pytest.fixture
async def orders_pool(orders_db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn(orders_db), min_size=1, max_size=3)
    yield pool
    await pool.close()


async def place_order(pool: asyncpg.Pool, user: dict[str, Any], *, unit_price: str) -> dict[str, Any]:
    """What order_api does for POST /api/orders: the order, its history, its order.created event."""
    price = Decimal(unit_price)
    async with pool.acquire() as conn, conn.transaction():
        row = await orders.insert_order(
            conn, user_id=user["id"], currency="EUR", total=price * 2, contact_json=json.dumps(user)
        )
        await orders.insert_items(conn, row["id"], [("BOOK-1", "A book", 2, price, price * 2)])
        await orders.insert_history(
            conn,
            row["id"],
            from_status=None,
            to_status="PENDING",
            changed_by=user["id"],
            reason="order placed",
        )
        order = order_out(row, await orders.get_items(conn, [row["id"]]))
        data = {"order": order.model_dump(mode="json"), "user": user}
        return await add_event(conn, ORDER_CREATED, order.id, data, producer="order_api")


async def outbox_events(pool: asyncpg.Pool, order_id: str, event_type: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload::text FROM outbox_events WHERE aggregate_id = $1 AND event_type = $2 ORDER BY id",
        order_id,
        event_type,
    )
    return [json.loads(row["payload"]) for row in rows]


async def handed_on(pool: asyncpg.Pool, event_id: str) -> bool:
    """Marked published, hold released: the relay will not publish the event."""
    row = await pool.fetchrow(
        "SELECT published_at, held_until FROM outbox_events WHERE event_id = $1", event_id
    )
    assert row is not None
    return row["published_at"] is not None and row["held_until"] is None


async def order_status(pool: asyncpg.Pool, order_id: str) -> str:
    row = await orders.get_order(pool, order_id)
    assert row is not None
    return str(row["status"])


async def wait_for_order_status(pool: asyncpg.Pool, order_id: str, expected: str) -> None:
    async def reached() -> bool:
        return await order_status(pool, order_id) == expected

    await wait_until(reached)


async def relay(broker: Any, event: dict[str, Any]) -> None:
    """Publish an event on every route, as common.outbox_relay does."""
    for route in ROUTES[event["event_type"]]:
        await publish(broker, relay_message(event, route))


async def test_an_order_is_confirmed_and_the_customer_emailed_with_its_id_and_total(
    start_worker: StartWorker, orders_pool: asyncpg.Pool, pool: asyncpg.Pool, smtp: SmtpServer
) -> None:
    broker = await start_worker()
    created = await place_order(orders_pool, contact(), unit_price="19.99")
    order_id = created["data"]["order"]["id"]

    await relay(broker, created)

    await wait_for_order_status(orders_pool, order_id, "CONFIRMED")
    [changed] = await outbox_events(orders_pool, order_id, ORDER_STATUS_CHANGED)
    assert (changed["data"]["from_status"], changed["data"]["to_status"]) == ("PENDING", "CONFIRMED")
    # No relay runs here: orders.process hands its status change on itself, then marks it.
    for event in (created, changed):
        await wait_for_status(pool, notification_id_for(event["event_id"], "email"), "sent")
    await wait_until(lambda: handed_on(orders_pool, changed["event_id"]))

    received, confirmed = sorted(smtp.handler.messages, key=lambda m: "confirmed" in m["Subject"])
    assert received["Subject"] == f"We received your order {order_id}"
    assert confirmed["Subject"] == f"Your order {order_id} is now confirmed"
    for message in (received, confirmed):
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert order_id in text
        assert "39.98 EUR" in text


async def test_an_order_over_the_limit_is_rejected(
    start_worker: StartWorker, orders_pool: asyncpg.Pool
) -> None:
    broker = await start_worker()  # MAX_ORDER_TOTAL=1000 in the test environment
    created = await place_order(orders_pool, contact(), unit_price="600.00")
    order_id = created["data"]["order"]["id"]

    await publish(broker, relay_message(created, PROCESS_ORDER))

    await wait_for_order_status(orders_pool, order_id, "REJECTED")
    history = await orders.get_history(orders_pool, order_id)
    assert history[-1]["changed_by"] == "orders.process"
    assert "1200.00 EUR exceeds the limit of 1000.00" in history[-1]["reason"]


async def test_a_redelivered_order_created_changes_nothing_twice_and_emails_once(
    start_worker: StartWorker, orders_pool: asyncpg.Pool, pool: asyncpg.Pool, smtp: SmtpServer
) -> None:
    broker = await start_worker()
    created = await place_order(orders_pool, contact(), unit_price="5.00")
    order_id = created["data"]["order"]["id"]

    for _ in range(3):
        await publish(broker, relay_message(created, PROCESS_ORDER))
    await asyncio.to_thread(broker.join, "orders", timeout=10_000)
    await asyncio.sleep(0.3)

    assert await order_status(orders_pool, order_id) == "CONFIRMED"
    assert [h["to_status"] for h in await orders.get_history(orders_pool, order_id)] == [
        "PENDING",
        "CONFIRMED",
    ]
    [changed] = await outbox_events(orders_pool, order_id, ORDER_STATUS_CHANGED)
    # orders.process fans out both events' notifications: one email each, however many runs.
    for event in (created, changed):
        await wait_for_status(pool, notification_id_for(event["event_id"], "email"), "sent")
    assert sorted(m["Subject"] for m in smtp.handler.messages) == [
        f"We received your order {order_id}",
        f"Your order {order_id} is now confirmed",
    ]


async def test_a_run_that_died_after_its_commit_leaves_the_held_status_change_to_the_next_run(
    start_worker: StartWorker, orders_pool: asyncpg.Pool, pool: asyncpg.Pool, smtp: SmtpServer
) -> None:
    created = await place_order(orders_pool, contact(), unit_price="5.00")
    # The first run committed the order's processing with its event held, then died.
    processed = await process_order_created(orders_pool, created, max_order_total=Decimal(1000), hold_s=600)
    [changed] = processed.held_events
    assert not await handed_on(orders_pool, changed["event_id"])

    broker = await start_worker()
    await publish(broker, relay_message(created, PROCESS_ORDER))  # the message, redelivered

    # Taken over at once, not after the 600 s hold: both emails, once each, and the event marked.
    for event in (created, changed):
        await wait_for_status(pool, notification_id_for(event["event_id"], "email"), "sent")
    await wait_until(lambda: handed_on(orders_pool, changed["event_id"]))
    assert len(smtp.handler.messages) == 2


async def test_an_order_whose_event_breaks_the_notifications_contract_is_processed_then_dead_lettered(
    start_worker: StartWorker, orders_pool: asyncpg.Pool, dead_letters: DeadLetterQueues
) -> None:
    broker = await start_worker()
    created = await place_order(orders_pool, contact(), unit_price="5.00")
    order_id = created["data"]["order"]["id"]
    created["data"]["user"] = {"id": "not a contact"}  # a producer bug, not the order's fault

    await publish(broker, relay_message(created, PROCESS_ORDER))

    # The order goes on (its own transaction came first); the fan-out cannot, and retrying
    # would not help: straight to orders.XQ for an operator.
    await wait_for_order_status(orders_pool, order_id, "CONFIRMED")
    [letter] = await wait_until(lambda: asyncio.to_thread(dead_letters.list))
    assert letter.queue == "orders.XQ"
    assert letter.message is not None
    assert (letter.message.actor_name, "retries" in letter.message.options) == ("orders.process", False)


async def test_an_order_event_for_no_known_order_is_dead_lettered_untried(
    start_worker: StartWorker, dead_letters: DeadLetterQueues
) -> None:
    broker = await start_worker()
    user = contact()
    event = {
        "event_id": "6f9b6c1e-0000-4000-8000-000000000001",
        "event_type": ORDER_CREATED,
        "occurred_at": "2026-11-25T19:00:00.000Z",
        "trace_id": "t",
        "producer": "tests",
        "data": {"order": {"id": "6f9b6c1e-0000-4000-8000-00000000dead"}, "user": user},
    }

    await publish(broker, relay_message(event, PROCESS_ORDER))

    [letter] = await wait_until(lambda: asyncio.to_thread(dead_letters.list))
    assert letter.queue == "orders.XQ"
    assert letter.message is not None
    assert (letter.message.actor_name, "retries" in letter.message.options) == ("orders.process", False)
