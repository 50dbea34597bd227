"""Redis client as an aiohttp cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from common.health import add_health_check
from common.settings import RedisSettings
from common.types import CleanupCtx

REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)


def make_redis(settings: RedisSettings) -> Redis:
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password or None,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        decode_responses=True,
    )


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
