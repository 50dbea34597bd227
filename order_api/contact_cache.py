"""A short-lived in-process cache of users' contacts, so most orders need no call to user_api.

Why in-process with a TTL and a Redis pub/sub invalidation (rather than a ``user.updated``
event through the outbox and RabbitMQ): the entry is tiny, a miss costs one HTTP call, and
user_api already touches Redis on every change of a user (it drops its own cache entry there),
so publishing ``user.changed`` next to that delete costs one round trip and no new machinery.
Pub/sub is at most once, so the cache trusts its entries only while its subscription is up:
when the subscription drops, every entry is dropped and the cache stays off until it is
subscribed again. A message lost anyway (published while the subscription was being set up)
leaves an entry stale for at most the TTL. A deleted user's sessions are revoked by user_api as
well, so they cannot order on a cached contact either way.

A fetch that raced an invalidation does not store its (possibly older) answer: every drop bumps
a generation counter, and ``put`` takes the generation read before the fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.events import USER_CHANGED_CHANNEL
from order_api.schemas import Contact

log = structlog.get_logger(__name__)

PING_INTERVAL_S = 10.0


class ContactCache:
    def __init__(self, *, ttl_s: float, max_size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Contact]] = OrderedDict()
        self._generation = 0
        # Off until the invalidation subscription is up: without it a change would go unseen.
        self.live = False

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, user_id: str) -> Contact | None:
        if not self.live:
            return None
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        expires, contact = entry
        if self._clock() >= expires:
            del self._entries[user_id]
            return None
        return contact

    def put(self, user_id: str, contact: Contact, *, generation: int) -> None:
        if not self.live or generation != self._generation or self.ttl_s <= 0:
            return
        self._entries[user_id] = (self._clock() + self.ttl_s, contact)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def drop(self, user_id: str) -> None:
        self._generation += 1
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


async def follow_invalidations(
    redis: Redis,
    cache: ContactCache,
    stop: asyncio.Event,
    *,
    retry_s: float = 1.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Drop entries as user_api announces changes, until ``stop`` is set.

    A stop event rather than cancellation alone: redis-py's reads can swallow a cancellation.
    """
    while not stop.is_set():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(USER_CHANGED_CHANNEL)
            # Anything published before now may have been missed: start empty.
            cache.clear()
            cache.live = True
            if ready is not None:
                ready.set()
            pinged = time.monotonic()
            while not stop.is_set():
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    cache.drop(str(message["data"]))
                elif message is None and time.monotonic() - pinged >= PING_INTERVAL_S:
                    # An idle subscription whose connection died fails here. Not on every empty
                    # read: the read right after a PONG returns None at once, so that would spin.
                    await pubsub.ping()
                    pinged = time.monotonic()
        except (RedisError, OSError) as exc:
            log.warning("contact_cache_invalidation_lost", error=str(exc), retry_s=retry_s)
        finally:
            cache.live = False
            cache.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_s)


@contextlib.asynccontextmanager
async def invalidations(redis: Redis, cache: ContactCache | None) -> AsyncIterator[None]:
    """Follow user_api's changes for as long as the block runs (nothing to do without a cache)."""
    if cache is None:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(follow_invalidations(redis, cache, stop), name="contact-cache-invalidation")
    try:
        yield
    finally:
        stop.set()
        task.cancel()
        # Done at once when the cancellation lands, within a read's timeout when it is swallowed.
        await asyncio.wait({task}, timeout=3.0)
