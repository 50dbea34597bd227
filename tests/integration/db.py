"""A real PostgreSQL connection inside one transaction per test, handed to an app as its pool.

``RolledBackPool`` wraps ONE asyncpg connection on which the fixture has begun a transaction:
``acquire()`` yields that connection, ``conn.transaction()`` inside it becomes a savepoint
(asyncpg does this natively), and the fixture rolls everything back at the end. So a test sees
real SQL, constraints and triggers, and leaves the database as it found it, without a
database per test. Pass it through the seam: ``create_app(settings, pool=rolled_back)``.

What it cannot do, so those tests stay on a real pool (the per-test database fixtures):
- anything that needs a second connection: LISTEN/NOTIFY (a NOTIFY is delivered on commit, which
  never comes), the outbox relay, advisory locks, two transactions racing each other;
- telling "inside a transaction" from "not": ``is_in_transaction()`` is always true here.

One connection runs one statement at a time, so concurrent users (a handler and a background
task) take turns through a lock; a task already holding the connection re-enters freely.
Statements sent to the pool itself run in a savepoint each, as autocommit would contain them:
a failing statement does not poison the rest of the test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from common.migrations import migrate_dsn


class RolledBackPool:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._turn = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            yield self.conn  # nested acquire in the same request: same connection, as with one pool slot
            return
        async with self._turn:
            self._holder = task
            try:
                yield self.conn
            finally:
                self._holder = None

    # The subset of asyncpg.Pool that repositories call on the pool itself.
    async def execute(self, sql: str, *args: Any, timeout: float | None = None) -> str:
        async with self.acquire() as conn, conn.transaction():
            result: str = await conn.execute(sql, *args, timeout=timeout)
            return result

    async def executemany(
        self, sql: str, args: Sequence[Sequence[Any]], *, timeout: float | None = None
    ) -> None:
        async with self.acquire() as conn, conn.transaction():
            await conn.executemany(sql, args, timeout=timeout)

    async def fetch(self, sql: str, *args: Any, timeout: float | None = None) -> list[asyncpg.Record]:
        async with self.acquire() as conn, conn.transaction():
            return list(await conn.fetch(sql, *args, timeout=timeout))

    async def fetchrow(self, sql: str, *args: Any, timeout: float | None = None) -> asyncpg.Record | None:
        async with self.acquire() as conn, conn.transaction():
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args, timeout=timeout)
            return row

    async def fetchval(self, sql: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        async with self.acquire() as conn, conn.transaction():
            return await conn.fetchval(sql, *args, column=column, timeout=timeout)

    async def close(self) -> None:
        raise AssertionError("an app closed the pool it was handed; it belongs to the test")


@contextlib.asynccontextmanager
async def rolled_back(dsn: str) -> AsyncIterator[RolledBackPool]:
    """One connection, one transaction, rolled back whatever the test did."""
    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield RolledBackPool(conn)
    finally:
        await transaction.rollback()
        await conn.close()


def migrate_in_thread(dsn: str, migrations: Sequence[tuple[str, Path]]) -> None:
    # Session fixtures are synchronous and may run inside a test's loop: a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, migrate_dsn(dsn, migrations)).result()
