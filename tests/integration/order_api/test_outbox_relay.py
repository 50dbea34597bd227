"""common.outbox_relay against real PostgreSQL and RabbitMQ (through a proxy that can cut it off)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from prometheus_client import REGISTRY

from common.amqp import AmqpUnavailable, DramatiqPublisher
from common.contexts import PG_POOL
from common.events import ORDER_STATUS_CHANGED, message_id_for
from common.outbox import add_event, mark_handed_on
from common.outbox_relay import CLAIM_BATCH_SQL, CLAIM_WINDOW_FACTOR, OutboxRelay
from order_api.app import create_app
from order_api.settings import Settings
from tests.conftest import pg_dsn
from tests.integration.order_api.broker_tools import QueueReader, TcpProxy, eventually
from tests.integration.order_api.conftest import SPEC, User, override, place
from tests.integration.order_api.outbox_tools import add_test_event, hold_event
from tests.integration.workers.management import queue_info, scratch_vhost
from tests.openapi_check import CheckedClient
from workers import queues

NewUser = Callable[..., User]
MakeClient = Callable[..., Any]


@pytest.fixture
async def reader(orders_vhost: str) -> AsyncIterator[QueueReader]:
    queue_reader = QueueReader(orders_vhost)
    await queue_reader.open(purge=True)
    yield queue_reader
    await queue_reader.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    tcp_proxy = TcpProxy()
    yield tcp_proxy
    await tcp_proxy.stop()


@pytest.fixture
def relay_client(aiohttp_client: Any, settings: Settings, orders_vhost: str) -> MakeClient:
    """An order_api with its relay running, against the test vhost (through ``port``)."""

    async def make(port: int = 5672, **overrides: Any) -> CheckedClient:
        changes: dict[str, Any] = {
            "outbox_relay_enabled": True,
            "rabbitmq_vhost": orders_vhost,
            "rabbitmq_port": port,
            "outbox_poll_interval_s": 0.5,
            "outbox_max_backoff_s": 0.5,
        }
        relay_settings = override(settings, **{**changes, **overrides})
        return CheckedClient(await aiohttp_client(create_app(relay_settings)), SPEC)

    return make


def _amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


async def _outbox(client: CheckedClient) -> list[asyncpg.Record]:
    return list(
        await client.app[PG_POOL].fetch(
            "SELECT event_id::text AS event_id, aggregate_id, payload::text AS payload,"
            " published_at, attempts, last_error FROM outbox_events ORDER BY id"
        )
    )


def _gauge(name: str, service: str = "order_api") -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service})


async def test_an_order_reaches_its_queue_as_a_dramatiq_message_woken_by_notify(
    relay_client: MakeClient, reader: QueueReader, new_user: NewUser
) -> None:
    # Polling once a minute: only LISTEN/NOTIFY can deliver within the wait below.
    client = await relay_client(outbox_poll_interval_s=60)
    await asyncio.sleep(0.3)  # let the relay finish its start-up pass and listen
    order = await place(client, new_user())
    await reader.wait_for("orders", 1, timeout_s=10)
    [row] = await _outbox(client)
    event = json.loads(row["payload"])
    [message] = reader.messages["orders"]
    assert (message.queue_name, message.actor_name) == ("orders", "orders.process")
    assert list(message.args) == [event]
    assert message.message_id == message_id_for(event["event_id"], "orders.process")
    assert message.options["trace_id"] == event["trace_id"]
    assert reader.properties["orders"][0].delivery_mode == 2  # persistent
    assert event["data"]["order"]["id"] == order["id"]
    assert row["published_at"] is not None
    assert (row["attempts"], row["last_error"]) == (1, None)
    # orders.process fans out the order's notifications itself: the event has no second route.
    await asyncio.sleep(0.5)
    assert reader.messages["notifications"] == []


async def test_with_rabbitmq_unreachable_orders_are_accepted_and_delivered_once_it_is_back(
    relay_client: MakeClient, reader: QueueReader, proxy: TcpProxy, new_user: NewUser
) -> None:
    client = await relay_client(port=proxy.port)  # nothing listens there yet
    user = new_user()
    orders = [await place(client, user) for _ in range(3)]
    assert (await client.delete(f"/api/orders/{orders[0]['id']}", headers=user.auth)).status == 200

    async def backlog_is_exported() -> bool:
        return _gauge("outbox_backlog_events") == 4

    await eventually(backlog_is_exported, timeout_s=10)
    age = _gauge("outbox_oldest_event_age_seconds")
    assert age is not None
    assert age > 0
    assert all(row["published_at"] is None for row in await _outbox(client))

    await proxy.start()
    await reader.wait_for("orders", 3)
    await reader.wait_for("notifications", 1)
    await asyncio.sleep(1.0)  # anything published twice would arrive by now
    await reader.drain()
    outbox = await _outbox(client)
    by_type = {row["event_id"]: json.loads(row["payload"])["event_type"] for row in outbox}
    # order.created goes to orders.process only (it fans out its notifications itself),
    # order.cancelled to the fan-out only: each event once, on its own route.
    assert sorted(reader.event_ids("orders")) == sorted(i for i, t in by_type.items() if t == "order.created")
    assert reader.event_ids("notifications") == [i for i, t in by_type.items() if t == "order.cancelled"]
    assert len(by_type) == 4

    async def backlog_is_empty() -> bool:
        return _gauge("outbox_backlog_events") == 0

    await eventually(backlog_is_empty, timeout_s=10)


async def test_a_lost_broker_connection_is_re_established_and_nothing_is_lost(
    relay_client: MakeClient, reader: QueueReader, proxy: TcpProxy, new_user: NewUser
) -> None:
    await proxy.start()
    client = await relay_client(port=proxy.port)
    user = new_user()
    await place(client, user)
    await reader.wait_for("orders", 1)
    await proxy.stop()
    later = [await place(client, user) for _ in range(2)]
    await asyncio.sleep(0.5)
    await reader.drain()
    assert len(reader.messages["orders"]) == 1
    await proxy.start()
    await reader.wait_for("orders", 3)
    await asyncio.sleep(1.0)
    await reader.drain()
    delivered_orders = [m.args[0]["data"]["order"]["id"] for m in reader.messages["orders"]]
    assert len(delivered_orders) == 3
    assert set(delivered_orders[1:]) == {o["id"] for o in later}
    assert len(set(reader.event_ids("orders"))) == len(reader.messages["orders"]) == 3


async def _add_events(pool: asyncpg.Pool, aggregates: int, per_aggregate: int) -> list[str]:
    """Events of several aggregates, interleaved as concurrent orders would write them."""
    event_ids = []
    for seq in range(per_aggregate):
        for aggregate in range(aggregates):
            event_ids.append((await add_test_event(pool, f"agg-{aggregate}", seq))["event_id"])
    return event_ids


def _relay(pool: asyncpg.Pool, vhost: str, dsn: str, service: str, **options: Any) -> OutboxRelay:
    return OutboxRelay(pool, DramatiqPublisher(_amqp_url(vhost)), service=service, listen_dsn=dsn, **options)


async def test_two_relays_publish_every_event_once_and_in_order_per_aggregate(
    client: CheckedClient, reader: QueueReader, orders_vhost: str, settings: Settings
) -> None:
    pool = client.app[PG_POOL]
    event_ids = await _add_events(pool, aggregates=20, per_aggregate=8)
    dsn = pg_dsn(settings.order_db_name)
    relays = [
        _relay(pool, orders_vhost, dsn, service, batch_size=5, poll_interval_s=0.2)
        for service in ("t_two_a", "t_two_b")
    ]
    for relay in relays:
        relay.start()
    try:
        await reader.wait_for("notifications", len(event_ids), timeout_s=30)
        await asyncio.sleep(0.5)
        await reader.drain()
    finally:
        for relay in relays:
            await relay.stop()
    delivered = reader.event_ids("notifications")
    assert sorted(delivered) == sorted(event_ids)  # each exactly once
    sequences: dict[str, list[int]] = {}
    rows = await pool.fetch("SELECT event_id::text AS event_id, aggregate_id FROM outbox_events")
    aggregate_of = {row["event_id"]: row["aggregate_id"] for row in rows}
    for message in reader.messages["notifications"]:
        event = message.args[0]
        sequences.setdefault(aggregate_of[event["event_id"]], []).append(event["data"]["seq"])
    assert all(seqs == list(range(8)) for seqs in sequences.values()), sequences
    published = [
        REGISTRY.get_sample_value(
            "outbox_events_published_total", {"service": service, "event_type": ORDER_STATUS_CHANGED}
        )
        or 0
        for service in ("t_two_a", "t_two_b")
    ]
    assert sum(published) == len(event_ids)
    assert all(count > 0 for count in published), published  # both relays really worked


async def test_after_a_notify_the_relay_lingers_and_one_pass_takes_the_events_committed_meanwhile(
    client: CheckedClient,
    reader: QueueReader,
    orders_vhost: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = client.app[PG_POOL]
    # Woken only by NOTIFY (the poll is a minute away); the linger is long enough to be sure.
    relay = _relay(
        pool, orders_vhost, pg_dsn(settings.order_db_name), "t_linger", poll_interval_s=60, linger_s=0.5
    )
    published_per_pass: list[int] = []
    publish_batch = relay._publish_batch

    async def counted() -> tuple[int, bool, AmqpUnavailable | None]:
        result = await publish_batch()
        published_per_pass.append(result[0])
        return result

    async def started() -> bool:
        return bool(published_per_pass)  # the start-up pass is behind it

    monkeypatch.setattr(relay, "_publish_batch", counted)
    relay.start()
    try:
        await eventually(started, timeout_s=10)
        event_ids = []
        for seq in range(5):  # five commits, five NOTIFYs, 50 ms apart
            async with pool.acquire() as conn, conn.transaction():
                event = await add_event(
                    conn, ORDER_STATUS_CHANGED, f"linger-{seq}", {"seq": seq}, producer="t"
                )
            event_ids.append(event["event_id"])
            await asyncio.sleep(0.05)
        await reader.wait_for("notifications", 5, timeout_s=10)
    finally:
        await relay.stop()
    assert sorted(reader.event_ids("notifications")) == sorted(event_ids)
    assert [n for n in published_per_pass if n] == [5], published_per_pass


def _rows_read(plan: dict[str, Any], relation: str) -> int:
    """Rows that the plan's scans of ``relation`` returned, over all their loops."""
    own = plan["Actual Rows"] * plan["Actual Loops"] if plan.get("Relation Name") == relation else 0
    return int(own) + sum(_rows_read(child, relation) for child in plan.get("Plans", []))


async def test_a_claim_reads_the_backlog_at_most_once_whatever_the_statistics_say(
    client: CheckedClient,
) -> None:
    # Statistics taken while (almost) nothing was pending, then a backlog of 3,000 events: the
    # old anti-join read the pending events once per candidate, 4.5 million rows here (issue 11).
    # Now the window is read from the pending index (in order, or all of it and sorted, as the
    # planner likes) and the heads by primary key.
    batch = 100
    window = batch * CLAIM_WINDOW_FACTOR
    async with client.app[PG_POOL].acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("ANALYZE outbox_events")
            pending = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
            await conn.execute(
                "INSERT INTO outbox_events (event_id, event_type, aggregate_id, payload)"
                " SELECT gen_random_uuid(), $1, 'backlog-' || (g % 1500), '{}'::jsonb"
                " FROM generate_series(1, 3000) g",
                ORDER_STATUS_CHANGED,
            )
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM_BATCH_SQL}"
            explained = await conn.fetchval(explain, batch, window)
            claimed = await conn.fetch(CLAIM_BATCH_SQL, batch, window)
        finally:
            await transaction.rollback()  # nothing of this stays
    plan = json.loads(explained)[0]["Plan"]
    assert len(claimed) == batch
    assert claimed[0]["more"]
    assert len({row["id"] for row in claimed}) == batch
    assert _rows_read(plan, "outbox_events") <= pending + 3000 + window


async def test_a_later_event_waits_while_an_earlier_one_of_its_aggregate_is_held(
    client: CheckedClient, reader: QueueReader, orders_vhost: str, settings: Settings
) -> None:
    pool = client.app[PG_POOL]
    first = await add_test_event(pool, "order-x", 1)
    second = await add_test_event(pool, "order-x", 2)
    other = await add_test_event(pool, "order-y", 1)
    dsn = pg_dsn(settings.order_db_name)
    relay = _relay(pool, orders_vhost, dsn, "t_hold")
    # Another relay is busy with the first event: it holds its row lock.
    holder = await asyncpg.connect(dsn)
    held = holder.transaction()
    await held.start()
    await holder.execute("SELECT 1 FROM outbox_events WHERE event_id = $1 FOR UPDATE", first["event_id"])
    try:
        assert await relay.publish_pending() == 1
        await reader.drain()
        assert reader.event_ids("notifications") == [other["event_id"]]
    finally:
        await held.rollback()
        await holder.close()
    assert await relay.publish_pending() == 2
    await reader.drain()
    await relay.stop()
    assert reader.event_ids("notifications") == [other["event_id"], first["event_id"], second["event_id"]]


async def test_an_event_its_producer_holds_is_left_until_handed_on_or_until_the_hold_is_over(
    client: CheckedClient, reader: QueueReader, orders_vhost: str, settings: Settings
) -> None:
    pool = client.app[PG_POOL]
    handed = await add_test_event(pool, "order-h", 1)
    await hold_event(pool, handed, 60)
    after = await add_test_event(pool, "order-h", 2)
    dropped = await add_test_event(pool, "order-d", 1)
    await hold_event(pool, dropped, 1)
    relay = _relay(pool, orders_vhost, pg_dsn(settings.order_db_name), "t_held")
    try:
        # Both held, and the event after one of them waits for it.
        assert await relay.publish_pending() == 0
        # The producer hands its event on: the next one of the aggregate goes.
        await mark_handed_on(pool, handed["event_id"])
        assert await relay.publish_pending() == 1
        # The other producer never does: once its hold is over, the relay publishes the event.
        await asyncio.sleep(1.1)
        assert await relay.publish_pending() == 1
        await mark_handed_on(pool, dropped["event_id"])  # too late: changes nothing
    finally:
        await relay.stop()
    await reader.drain()
    assert sorted(reader.event_ids("notifications")) == sorted([after["event_id"], dropped["event_id"]])
    rows = {r["event_id"]: r for r in await _outbox(client)}
    assert all(row["published_at"] is not None for row in rows.values())
    assert [rows[e["event_id"]]["attempts"] for e in (handed, after, dropped)] == [1, 1, 1]


async def test_an_unroutable_event_is_recorded_and_published_after_the_queue_is_declared_again(
    client: CheckedClient, reader: QueueReader, orders_vhost: str, settings: Settings
) -> None:
    pool = client.app[PG_POOL]
    relay = _relay(pool, orders_vhost, pg_dsn(settings.order_db_name), "t_unroutable")
    assert await relay.publish_pending() == 0  # connects and declares the queues
    await reader.close()
    deleter = QueueReader(orders_vhost)
    await deleter.open(purge=False)
    assert deleter._channel is not None
    await deleter._channel.queue_delete("notifications")
    await deleter.close()
    async with pool.acquire() as conn, conn.transaction():
        event = await add_event(conn, ORDER_STATUS_CHANGED, "order-z", {"seq": 1}, producer="test")

    assert await relay.publish_pending() == 0
    row = await pool.fetchrow("SELECT published_at, attempts, last_error FROM outbox_events")
    assert row["published_at"] is None
    assert row["attempts"] == 1
    assert "NO_ROUTE" in row["last_error"]

    assert await relay.publish_pending() == 1
    await relay.stop()
    row = await pool.fetchrow("SELECT published_at, attempts, last_error FROM outbox_events")
    assert row["published_at"] is not None
    assert (row["attempts"], row["last_error"]) == (2, None)
    again = QueueReader(orders_vhost, ("notifications",))
    await again.open(purge=False)
    await again.drain()
    await again.close()
    assert again.event_ids("notifications") == [event["event_id"]]


def _declare_classic_queues(vhost: str) -> None:
    """The queues as every earlier version declared them: Dramatiq's stock broker, classic."""
    broker = RabbitmqBroker(url=_amqp_url(vhost))
    try:
        for queue in ("orders", "notifications"):
            broker.declare_queue(queue, ensure=True)
    finally:
        broker.close()


async def test_with_classic_queues_events_wait_in_the_outbox_until_the_queues_are_migrated(
    client: CheckedClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = client.app[PG_POOL]
    async with pool.acquire() as conn, conn.transaction():
        event = await add_event(conn, ORDER_STATUS_CHANGED, "order-m", {"seq": 1}, producer="test")
    with scratch_vhost("relay_classic") as vhost:
        await asyncio.to_thread(_declare_classic_queues, vhost)
        relay = _relay(pool, vhost, pg_dsn(settings.order_db_name), "t_classic")
        try:
            # The relay refuses to redeclare them (PRECONDITION_FAILED) and says what to run.
            with pytest.raises(AmqpUnavailable, match=r"python -m workers\.queues migrate"):
                await relay.publish_pending()
            row = await pool.fetchrow("SELECT published_at FROM outbox_events")
            assert row["published_at"] is None

            monkeypatch.setenv("RABBITMQ_VHOST", vhost)
            assert await asyncio.to_thread(queues.main, ["migrate"]) == 0

            assert await relay.publish_pending() == 1
        finally:
            await relay.stop()
        assert queue_info(vhost, "notifications")["type"] == "quorum"
        reader = QueueReader(vhost, ("notifications",))
        await reader.open(purge=False)
        await reader.drain()
        await reader.close()
        assert reader.event_ids("notifications") == [event["event_id"]]
