"""The Redis client, built from settings. No aiohttp here (the app's context is in common/contexts.py)."""

from __future__ import annotations

from redis.asyncio import Redis

from common.settings import RedisSettings


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
