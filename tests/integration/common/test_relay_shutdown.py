"""Stopping the outbox relay lets the batch in hand finish: published, confirmed, marked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from dramatiq import Message

from common.migrations import migrate_dsn
from common.outbox import OUTBOX_MIGRATIONS, add_event
from common.outbox_relay import OutboxRelay
from tests.conftest import pg_dsn


class SlowPublisher:
    """Stands in for the DramatiqPublisher: every publish waits until the test releases it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.publishing = asyncio.Event()
        self.published: list[str] = []
        self.is_connected = True

    async def ensure_ready(self) -> None:
        self.is_connected = True

    async def send(self, message: Message[Any], **_: Any) -> None:
        self.publishing.set()
        await self.release.wait()
        self.published.append(message.message_id)

    async def close(self) -> None:
        self.is_connected = False


@pytest.fixture
async def pool(database_factory: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    dsn = pg_dsn(database_factory("relay_stop"))
    await migrate_dsn(dsn, [OUTBOX_MIGRATIONS])
    created = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


async def test_stop_waits_for_the_batch_in_hand(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for number in range(3):
            await add_event(
                conn, "user.registered", f"agg-{number}", {"user": {"id": str(number)}}, producer="t"
            )
    publisher = SlowPublisher()
    relay = OutboxRelay(pool, publisher, service="relay_stop_test", poll_interval_s=0.1)  # type: ignore[arg-type]
    relay.start()
    await asyncio.wait_for(publisher.publishing.wait(), 10)
    stopping = asyncio.create_task(relay.stop(grace_s=10))
    await asyncio.sleep(0.3)
    assert not stopping.done()  # still waiting for the broker's answer to the batch in hand
    publisher.release.set()
    await asyncio.wait_for(stopping, 10)
    unpublished = await pool.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
    assert unpublished == 0
    assert len(publisher.published) == 3


async def test_a_stop_past_its_grace_rolls_the_batch_back(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await add_event(conn, "user.registered", "agg-x", {"user": {"id": "x"}}, producer="t")
    publisher = SlowPublisher()
    relay = OutboxRelay(pool, publisher, service="relay_stop_test", poll_interval_s=0.1)  # type: ignore[arg-type]
    relay.start()
    await asyncio.wait_for(publisher.publishing.wait(), 10)
    await relay.stop(grace_s=0.2)
    # Cancelled: nothing marked, so the next relay publishes it (at least once, never lost).
    unpublished = await pool.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
    assert unpublished == 1
