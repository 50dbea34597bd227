"""create_app(settings): the order service as an aiohttp application.

Every resource can be handed in (a test's rolled-back connection, a stand-in users client):
what is passed is used as is and never opened or closed here; what is not is opened by a
cleanup context, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web
from redis.asyncio import Redis

from common.auth import TOKEN_VERIFIER, token_verifier
from common.contexts import PG_POOL, REDIS, pg_pool_ctx, redis_ctx
from common.http_tracing import tracing_ctx
from common.outbox_relay_ctx import outbox_relay_ctx
from common.roots import given_or_opened
from common.types import CleanupCtx
from common.web import base_application
from order_api import service
from order_api.contact_cache import invalidations
from order_api.deps import MIGRATIONS, build_deps, user_service_session, users_client
from order_api.routes import setup_routes
from order_api.service import Deps, Users
from order_api.settings import Settings
from order_api.state import DEPS

__all__ = ["MIGRATIONS", "create_app"]
log = structlog.get_logger(__name__)


def _deps_ctx(settings: Settings, users: Users | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if users is not None:
            app[DEPS] = build_deps(settings, app[PG_POOL], users)
            yield
            return
        async with user_service_session(settings) as session:
            client = users_client(settings, session)
            app[DEPS] = build_deps(settings, app[PG_POOL], client)
            # The contact cache is trusted only while it follows user_api's changes.
            async with invalidations(app[REDIS], client.contacts):
                yield

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


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    redis: Redis | None = None,
    users: Users | None = None,
) -> web.Application:
    app = base_application("order_api")
    # First: the TracerProvider outlives every other context (their last spans get exported).
    app.cleanup_ctx.append(tracing_ctx("order_api", settings))
    app[TOKEN_VERIFIER] = token_verifier(
        settings, production=settings.is_production, redis=lambda: app[REDIS]
    )
    database = pg_pool_ctx(
        settings, settings.order_db_name, migrations=MIGRATIONS, create_database=not settings.is_production
    )
    given_or_opened(app, PG_POOL, pool, database)
    given_or_opened(app, REDIS, redis, redis_ctx(settings))
    app.cleanup_ctx.append(_deps_ctx(settings, users))
    app.cleanup_ctx.append(outbox_relay_ctx(settings, listen_dsn=settings.dsn))
    app.cleanup_ctx.append(_idempotency_purge_ctx(settings))
    setup_routes(app)
    return app
