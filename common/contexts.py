"""The aiohttp side of the shared resources: PostgreSQL and Redis as cleanup contexts.

Each context opens its resource on the application's loop, registers its readiness check and
closes it on shutdown. The resources themselves (``common/db.py``, ``common/redis.py``) import no
aiohttp, so repositories and workers can use them without the HTTP floor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from common.db import create_pool, export_pool_metrics
from common.health import add_health_check
from common.metrics import SERVICE_NAME
from common.migrations import ensure_database, migrate_dsn
from common.redis import make_redis
from common.settings import DatabaseSettings, RedisSettings
from common.types import CleanupCtx

PG_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pg_pool", asyncpg.Pool)
REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)


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


def redis_ctx(settings: RedisSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = make_redis(settings)
        app[REDIS] = client

        async def check() -> None:
            await client.ping()

        add_health_check(app, "redis", check)
        yield
        await client.aclose()

    return ctx
