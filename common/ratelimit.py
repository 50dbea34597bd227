"""Fixed-window rate limiting in Redis: one INCR per attempt, the window's TTL as Retry-After."""

from __future__ import annotations

from redis.asyncio import Redis

from common.errors import TooManyRequests


async def hit(redis: Redis, key: str, *, limit: int, window_s: int) -> int | None:
    """Count one attempt; return seconds to wait if the limit is exceeded, else None."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    if int(count) > limit:
        return max(1, int(ttl))
    return None


async def enforce(redis: Redis, limits: list[tuple[str, int, int]], *, what: str) -> None:
    """Apply each (key, limit, window) and raise 429 with the longest wait if any is exceeded."""
    waits = [w for key, limit, window in limits if (w := await hit(redis, key, limit=limit, window_s=window))]
    if waits:
        wait = max(waits)
        raise TooManyRequests(f"too many {what}; try again in {wait} s", retry_after_s=wait)
