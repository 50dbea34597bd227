"""asyncpg pool as an aiohttp cleanup context, with its utilisation exported as a gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Gauge

from common.health import add_health_check
from common.metrics import SERVICE_NAME
from common.migrations import ensure_database, migrate_dsn
from common.settings import DatabaseSettings
from common.types import CleanupCtx

PG_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pg_pool", asyncpg.Pool)

# What repository functions accept: a pool, a connection, or a connection checked out of a pool.
Connection = asyncpg.Connection | PoolConnectionProxy
Executor = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool

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
    settings: DatabaseSettings,
    database: str,
    *,
    migrations: Sequence[tuple[str, Path]] = (),
    create_database: bool = False,
) -> CleanupCtx:
    """Pool for ``database``; first creates it (development) and applies pending migrations."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        dsn = settings.dsn_for(database)
        if create_database:
            await ensure_database(settings.dsn_for("postgres"), database)
        if migrations:
            await migrate_dsn(dsn, migrations)
        pool = await create_pool(dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size)
        app[PG_POOL] = pool
        export_pool_metrics(app[SERVICE_NAME], pool)

        async def check() -> None:
            await pool.fetchval("SELECT 1")

        add_health_check(app, "postgresql", check)
        yield
        await pool.close()

    return ctx
