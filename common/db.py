"""asyncpg pool as an aiohttp cleanup context, with its utilisation exported as a gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web
from prometheus_client import Gauge

from common.health import add_health_check
from common.metrics import SERVICE_NAME

PG_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pg_pool", asyncpg.Pool)

DB_POOL_SIZE = Gauge("db_pool_connections", "Connections open in the pool", ["service"])
DB_POOL_IN_USE = Gauge("db_pool_connections_in_use", "Connections checked out of the pool", ["service"])
DB_POOL_MAX = Gauge("db_pool_connections_max", "Pool size limit", ["service"])


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    # command_timeout bounds any single statement: a stuck query must not hold a request forever.
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=10, timeout=5
    )
    return pool


def export_pool_metrics(service: str, pool: asyncpg.Pool) -> None:
    DB_POOL_SIZE.labels(service).set_function(pool.get_size)
    DB_POOL_IN_USE.labels(service).set_function(lambda: pool.get_size() - pool.get_idle_size())
    DB_POOL_MAX.labels(service).set_function(pool.get_max_size)


def pg_pool_ctx(
    dsn: str, *, min_size: int = 2, max_size: int = 10
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
        app[PG_POOL] = pool
        export_pool_metrics(app[SERVICE_NAME], pool)

        async def check() -> None:
            await pool.fetchval("SELECT 1")

        add_health_check(app, "postgresql", check)
        yield
        await pool.close()

    return ctx
