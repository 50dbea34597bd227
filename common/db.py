"""asyncpg pool and the connection types repository functions accept. No aiohttp here.

Repositories, workers and the outbox import this module; the aiohttp cleanup context that opens
the pool for a web application lives in ``common/contexts.py``.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Gauge

# What repository functions accept: a pool, a connection, or a connection checked out of a pool.
Connection = asyncpg.Connection | PoolConnectionProxy
Executor = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool

DB_POOL_SIZE = Gauge("db_pool_connections", "Connections open in the pool", ["service"])
DB_POOL_IN_USE = Gauge("db_pool_connections_in_use", "Connections checked out of the pool", ["service"])
DB_POOL_MAX = Gauge("db_pool_connections_max", "Pool size limit", ["service"])


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset that sends nothing: no pooled connection carries session state to clear.

    asyncpg's default reset is one round trip per release (RESET ALL; CLOSE ALL; UNLISTEN *;
    pg_advisory_unlock_all()), about half the statements of an order. It only matters for state a
    session keeps past its transaction, and none of ours does: LISTEN is on the outbox relay's
    own connection, the migrations' session advisory lock on migrate_dsn's own connection, and
    no code runs SET without LOCAL or opens a cursor outside a transaction
    (tests/integration/common/test_pool_reset.py checks each of these). asyncpg still rolls back
    a transaction left open and drops listener callbacks before it calls this.
    """


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    # command_timeout bounds any single statement: a stuck query must not hold a request forever.
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=10, timeout=5, reset=keep_session
    )
    return pool


def export_pool_metrics(service: str, pool: asyncpg.Pool) -> None:
    DB_POOL_SIZE.labels(service).set_function(pool.get_size)
    DB_POOL_IN_USE.labels(service).set_function(lambda: pool.get_size() - pool.get_idle_size())
    DB_POOL_MAX.labels(service).set_function(pool.get_max_size)
