"""What order_api's rules work with, built one way for the app (and whatever else needs it)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg

from common.breaker import Breaker
from common.outbox import OUTBOX_MIGRATIONS
from order_api.contact_cache import ContactCache
from order_api.service import Deps, Users
from order_api.settings import Settings
from order_api.users_client import UsersClient

MIGRATIONS = [OUTBOX_MIGRATIONS, ("order_api", Path(__file__).parent / "sql")]
USER_SERVICE_BREAKER = "user_service"


def user_service_session(settings: Settings) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.user_service_timeout_s),
        # Bounded like the database pool: a slow user_api must not pile up sockets.
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=50, keepalive_timeout=30),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def users_client(settings: Settings, session: aiohttp.ClientSession) -> UsersClient:
    breaker = Breaker(
        USER_SERVICE_BREAKER,
        fail_max=settings.user_service_breaker_fail_max,
        reset_timeout_s=settings.user_service_breaker_reset_s,
    )
    return UsersClient(
        session,
        settings.user_service_url,
        breaker,
        timeout_s=settings.user_service_timeout_s,
        max_retries=settings.user_service_max_retries,
        retry_backoff_s=settings.user_service_retry_backoff_s,
        instance_cooloff_s=settings.user_service_instance_cooloff_s,
        contacts=ContactCache(
            ttl_s=settings.user_contact_cache_ttl_s, max_size=settings.user_contact_cache_size
        )
        if settings.user_contact_cache_ttl_s > 0
        else None,
    )


def build_deps(settings: Settings, pool: asyncpg.Pool, users: Users) -> Deps:
    return Deps(pool, users, settings)
