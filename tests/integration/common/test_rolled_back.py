"""The rolled-back transaction fixture (tests/integration/db.py) does what the layer relies on."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.conftest import pg_dsn
from tests.integration.db import RolledBackPool, rolled_back


async def test_what_a_test_writes_is_gone_afterwards(orders_migrated_db: str) -> None:
    name = f"rolled-back-{uuid.uuid4().hex}"
    async with rolled_back(pg_dsn(orders_migrated_db)) as pool:
        await pool.execute("CREATE TABLE probe (name text)")
        await pool.execute("INSERT INTO probe VALUES ($1)", name)
        assert await pool.fetchval("SELECT name FROM probe") == name
    conn = await asyncpg.connect(pg_dsn(orders_migrated_db))
    try:
        assert await conn.fetchval("SELECT to_regclass('probe')") is None
    finally:
        await conn.close()


async def test_a_failed_inner_transaction_is_a_savepoint_and_the_test_goes_on(
    orders_tx: RolledBackPool,
) -> None:
    await orders_tx.execute("CREATE TABLE probe (id int PRIMARY KEY)")
    await orders_tx.execute("INSERT INTO probe VALUES (1)")

    async def insert_two_and_a_duplicate() -> None:
        async with orders_tx.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO probe VALUES (2)")
            await conn.execute("INSERT INTO probe VALUES (1)")

    with pytest.raises(asyncpg.UniqueViolationError):
        await insert_two_and_a_duplicate()
    assert [r["id"] for r in await orders_tx.fetch("SELECT id FROM probe")] == [1]


async def test_a_failing_statement_on_the_pool_does_not_poison_the_rest(orders_tx: RolledBackPool) -> None:
    with pytest.raises(asyncpg.UndefinedTableError):
        await orders_tx.fetch("SELECT * FROM no_such_table")
    assert await orders_tx.fetchval("SELECT 1") == 1


async def test_concurrent_users_take_turns_on_the_one_connection(orders_tx: RolledBackPool) -> None:
    async def slow_query(n: int) -> int:
        async with orders_tx.acquire() as conn:
            value: int = await conn.fetchval("SELECT $1::int FROM pg_sleep(0.05)", n)
            return value

    assert await asyncio.gather(*(slow_query(n) for n in range(4))) == [0, 1, 2, 3]


async def test_a_nested_acquire_in_the_same_task_reuses_the_connection(orders_tx: RolledBackPool) -> None:
    async with orders_tx.acquire() as outer, orders_tx.acquire() as inner:
        assert inner is outer


async def test_an_app_may_not_close_it(orders_tx: RolledBackPool) -> None:
    with pytest.raises(AssertionError, match="belongs to the test"):
        await orders_tx.close()
