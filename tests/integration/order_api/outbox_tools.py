"""Outbox rows written as the producers write them, for the relay's and the marks' tests."""

from __future__ import annotations

from typing import Any

import asyncpg

from common.events import ORDER_STATUS_CHANGED
from common.outbox import add_event


async def add_test_event(pool: asyncpg.Pool, aggregate_id: str, seq: int) -> dict[str, Any]:
    """One event in its own transaction, as a producer writes it."""
    async with pool.acquire() as conn, conn.transaction():
        return await add_event(conn, ORDER_STATUS_CHANGED, aggregate_id, {"seq": seq}, producer="test")


async def hold_event(pool: asyncpg.Pool, event: dict[str, Any], seconds: float) -> None:
    """What a producer that hands its event on writes (order_api.repository.DECIDE_PENDING_SQL)."""
    await pool.execute(
        "UPDATE outbox_events SET held_until = now() + make_interval(secs => $2) WHERE event_id = $1",
        event["event_id"],
        seconds,
    )
