"""create_app(settings): the order service as an aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from common.auth import TOKEN_VERIFIER, redis_revocation_check
from common.breaker import Breaker
from common.db import PG_POOL, pg_pool_ctx
from common.jwt import TokenVerifier, load_public_key
from common.outbox import OUTBOX_MIGRATIONS
from common.outbox_relay import outbox_relay_ctx
from common.redis import REDIS, redis_ctx
from common.types import CleanupCtx
from common.web import base_application
from order_api import service
from order_api.routes import setup_routes
from order_api.service import Deps
from order_api.settings import Settings
from order_api.state import DEPS, SETTINGS
from order_api.users_client import UsersClient

MIGRATIONS = [OUTBOX_MIGRATIONS, ("order_api", Path(__file__).parent / "sql")]
USER_SERVICE_BREAKER = "user_service"
log = structlog.get_logger(__name__)


def _user_service_ctx(settings: Settings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.user_service_timeout_s),
            # Bounded like the database pool: a slow user_api must not pile up sockets.
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=50, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        breaker = Breaker(
            USER_SERVICE_BREAKER,
            fail_max=settings.user_service_breaker_fail_max,
            reset_timeout_s=settings.user_service_breaker_reset_s,
        )
        users = UsersClient(
            session,
            settings.user_service_url,
            breaker,
            timeout_s=settings.user_service_timeout_s,
            max_retries=settings.user_service_max_retries,
            retry_backoff_s=settings.user_service_retry_backoff_s,
            instance_cooloff_s=settings.user_service_instance_cooloff_s,
        )
        app[DEPS] = Deps(app[PG_POOL], users, settings)
        yield
        await session.close()

    return ctx


def _idempotency_purge_ctx(settings: Settings) -> CleanupCtx:
    """Delete expired Idempotency-Key records now and then; lookups ignore them meanwhile."""

    async def purge_forever(deps: Deps) -> None:
        while True:
            try:
                purged = await service.purge_expired_idempotency_keys(deps)
                if purged:
                    log.info("idempotency_keys_purged", count=purged)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("idempotency_key_purge_failed", error=str(exc))
            await asyncio.sleep(settings.idempotency_purge_interval_s)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(purge_forever(app[DEPS]), name="idempotency-key-purge")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def create_app(settings: Settings) -> web.Application:
    app = base_application("order_api")
    app[SETTINGS] = settings
    # Read at build time: a missing or wrong key stops start-up instead of failing every request.
    public_key = load_public_key(settings, production=settings.is_production)
    app[TOKEN_VERIFIER] = TokenVerifier(
        public_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        is_revoked=redis_revocation_check(lambda: app[REDIS]),
    )
    app.cleanup_ctx.append(
        pg_pool_ctx(
            settings,
            settings.order_db_name,
            migrations=MIGRATIONS,
            create_database=not settings.is_production,
        )
    )
    app.cleanup_ctx.append(redis_ctx(settings))
    app.cleanup_ctx.append(_user_service_ctx(settings))
    app.cleanup_ctx.append(outbox_relay_ctx(settings, listen_dsn=settings.dsn))
    app.cleanup_ctx.append(_idempotency_purge_ctx(settings))
    setup_routes(app)
    return app
