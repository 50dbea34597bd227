"""order_api's contact cache: bounded, short-lived, and dropped when user_api announces a change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from redis.asyncio import Redis

from order_api.contact_cache import USER_CHANGED_CHANNEL, ContactCache, follow_invalidations, invalidations
from order_api.schemas import Contact
from order_api.settings import Settings
from order_api.state import DEPS
from tests.conftest import pg_dsn
from tests.integration.order_api.conftest import StandInUserService, User, order_body
from tests.openapi_check import CheckedClient
from user_api.service import USER_CHANGED_CHANNEL as PUBLISHED_CHANNEL

NewUser = Callable[..., User]


def _contact(email: str = "ada@example.com") -> Contact:
    return Contact.model_validate(
        {
            "id": "00000000-0000-4000-8000-000000000001",
            "email": email,
            "name": "Ada",
            "phone": None,
            "notification_preferences": {"email": True, "sms": False, "push": False},
            "push_token": None,
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _live_cache(clock: Clock, *, ttl_s: float = 30.0, max_size: int = 10) -> ContactCache:
    cache = ContactCache(ttl_s=ttl_s, max_size=max_size, clock=clock)
    cache.live = True
    return cache


def test_user_api_publishes_on_the_channel_order_api_follows() -> None:
    assert PUBLISHED_CHANNEL == USER_CHANGED_CHANNEL


def test_an_entry_lives_for_the_ttl() -> None:
    clock = Clock()
    cache = _live_cache(clock)
    cache.put("u1", _contact(), generation=cache.generation)
    clock.now += 29.9
    assert cache.get("u1") == _contact()
    clock.now += 0.1
    assert cache.get("u1") is None
    assert len(cache) == 0


def test_the_cache_is_bounded_least_recently_stored_out_first() -> None:
    cache = _live_cache(Clock(), max_size=2)
    for user in ("u1", "u2", "u3"):
        cache.put(user, _contact(), generation=cache.generation)
    assert len(cache) == 2
    assert cache.get("u1") is None
    assert cache.get("u3") is not None


def test_an_answer_fetched_across_an_invalidation_is_not_stored() -> None:
    cache = _live_cache(Clock())
    before_fetch = cache.generation
    cache.drop("u1")  # user_api's change arrives while the HTTP call is in flight
    cache.put("u1", _contact("old@example.com"), generation=before_fetch)
    assert cache.get("u1") is None


def test_nothing_is_kept_while_the_cache_does_not_follow_changes() -> None:
    cache = ContactCache(ttl_s=30.0, max_size=10)
    cache.put("u1", _contact(), generation=cache.generation)
    assert cache.get("u1") is None


@pytest.fixture
async def redis(redis_flushed: int) -> AsyncIterator[Redis]:
    client = Redis(db=redis_flushed, decode_responses=True)
    yield client
    await client.aclose()


async def _wait_until(condition: object, timeout_s: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_published_change_drops_the_entry(redis: Redis) -> None:
    cache = ContactCache(ttl_s=30.0, max_size=10)
    async with invalidations(redis, cache):
        await _wait_until(lambda: cache.live)
        cache.put("u1", _contact(), generation=cache.generation)
        cache.put("u2", _contact(), generation=cache.generation)
        await redis.publish(USER_CHANGED_CHANNEL, "u1")
        await _wait_until(lambda: cache.get("u1") is None)
        assert cache.get("u2") is not None
    assert not cache.live
    assert len(cache) == 0


async def test_a_lost_subscription_empties_the_cache_and_turns_it_off() -> None:
    cache = ContactCache(ttl_s=30.0, max_size=10)
    stop = asyncio.Event()
    # Nothing listens on this port: the subscription cannot be set up.
    unreachable = Redis(port=1, socket_connect_timeout=0.2)
    task = asyncio.create_task(follow_invalidations(unreachable, cache, stop, retry_s=0.05))
    await asyncio.sleep(0.3)
    cache.put("u1", _contact(), generation=cache.generation)
    assert not cache.live
    assert cache.get("u1") is None
    stop.set()
    await asyncio.wait_for(task, 30)  # redis-py retries a refused connection with backoff first
    await unreachable.aclose()


async def _order_email(settings: Settings, order_id: str) -> str:
    conn = await asyncpg.connect(pg_dsn(settings.order_db_name))
    try:
        contact = await conn.fetchval("SELECT contact::text FROM orders WHERE id = $1", order_id)
    finally:
        await conn.close()
    email: str = json.loads(contact)["email"]
    return email


async def test_orders_use_the_cached_contact_until_user_api_announces_the_change(
    client: CheckedClient,
    new_user: NewUser,
    user_service: StandInUserService,
    settings: Settings,
    redis: Redis,
) -> None:
    contacts = client.app[DEPS].users.contacts
    assert contacts is not None
    await _wait_until(lambda: contacts.live)
    user = new_user()

    async def place() -> str:
        response = await client.post("/api/orders", json=order_body(), headers=user.auth)
        assert response.status == 201, await response.text()
        return await _order_email(settings, (await response.json())["id"])

    first = await place()
    calls = user_service.calls
    user_service.users[user.id]["email"] = "new-address@example.com"
    assert await place() == first  # from the cache: no call to user_api
    assert user_service.calls == calls

    await redis.publish(USER_CHANGED_CHANNEL, user.id)  # what user_api does on the change
    await _wait_until(lambda: contacts.get(user.id) is None)
    assert await place() == "new-address@example.com"
    assert user_service.calls == calls + 1


async def test_orders_go_on_from_the_cache_while_user_api_is_down(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    contacts = client.app[DEPS].users.contacts
    assert contacts is not None
    await _wait_until(lambda: contacts.live)
    user = new_user()
    assert (await client.post("/api/orders", json=order_body(), headers=user.auth)).status == 201
    await user_service.stop()
    assert (await client.post("/api/orders", json=order_body(), headers=user.auth)).status == 201
    stranger = new_user()
    assert (await client.post("/api/orders", json=order_body(), headers=stranger.auth)).status == 503
