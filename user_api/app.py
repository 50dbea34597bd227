"""create_app(settings): the user service as an aiohttp application.

Every resource can be handed in (a test's rolled-back connection, a fake Redis): what is
passed is used as is and never opened or closed here; what is not is opened by a cleanup
context, as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from common.auth import TOKEN_VERIFIER, token_verifier
from common.contexts import PG_POOL, REDIS, pg_pool_ctx, redis_ctx
from common.http_tracing import tracing_ctx
from common.jwt import load_private_key
from common.outbox_relay_ctx import outbox_relay_ctx
from common.roots import given_or_opened
from common.types import CleanupCtx
from common.web import base_application
from user_api.deps import MIGRATIONS, build_deps
from user_api.routes import setup_routes
from user_api.settings import Settings
from user_api.state import DEPS, TRUSTED_PROXIES

__all__ = ["MIGRATIONS", "create_app"]


def _deps_ctx(settings: Settings) -> CleanupCtx:
    # Read before anything connects: a missing key stops start-up at once, by name.
    private_key = load_private_key(settings, production=settings.is_production)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[DEPS] = build_deps(settings, app[PG_POOL], app[REDIS], private_key)
        yield

    return ctx


def create_app(
    settings: Settings, *, pool: asyncpg.Pool | None = None, redis: Redis | None = None
) -> web.Application:
    app = base_application("user_api")
    # First: the TracerProvider outlives every other context (their last spans get exported).
    app.cleanup_ctx.append(tracing_ctx("user_api", settings))
    app[TRUSTED_PROXIES] = frozenset(p.strip() for p in settings.trusted_proxies.split(",") if p.strip())
    app[TOKEN_VERIFIER] = token_verifier(
        settings, production=settings.is_production, redis=lambda: app[REDIS]
    )
    deps_ctx = _deps_ctx(settings)
    database = pg_pool_ctx(
        settings, settings.user_db_name, migrations=MIGRATIONS, create_database=not settings.is_production
    )
    given_or_opened(app, PG_POOL, pool, database)
    given_or_opened(app, REDIS, redis, redis_ctx(settings))
    app.cleanup_ctx.append(deps_ctx)
    # Publishes user.registered (the welcome message) from the outbox to RabbitMQ.
    app.cleanup_ctx.append(outbox_relay_ctx(settings, listen_dsn=settings.dsn))
    setup_routes(app)
    return app
