"""create_app(settings): the user service as an aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
from aiohttp import web

from common.auth import TOKEN_VERIFIER, redis_revocation_check
from common.db import PG_POOL, pg_pool_ctx
from common.jwt import TokenVerifier, load_private_key, load_public_key
from common.outbox import OUTBOX_MIGRATIONS
from common.outbox_relay import outbox_relay_ctx
from common.redis import REDIS, redis_ctx
from common.types import CleanupCtx
from common.web import base_application
from user_api.routes import setup_routes
from user_api.service import Deps
from user_api.settings import Settings
from user_api.state import DEPS, SETTINGS, TRUSTED_PROXIES
from user_api.tokens import TokenService

MIGRATIONS = [OUTBOX_MIGRATIONS, ("user_api", Path(__file__).parent / "sql")]


def _deps_ctx(settings: Settings) -> CleanupCtx:
    # Keys are read before anything connects: a missing key stops start-up at once, by name.
    public_key = load_public_key(settings, production=settings.is_production)
    private_key = load_private_key(settings, production=settings.is_production)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = app[REDIS]
        app[TOKEN_VERIFIER] = TokenVerifier(
            public_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            is_revoked=redis_revocation_check(lambda: redis),
        )
        tokens = TokenService(
            redis,
            private_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl_s=settings.access_token_ttl_s,
            refresh_ttl_s=settings.refresh_token_ttl_s,
        )
        dummy_hash = bcrypt.hashpw(b"timing-equaliser", bcrypt.gensalt(settings.bcrypt_rounds))
        app[DEPS] = Deps(app[PG_POOL], redis, tokens, settings, dummy_hash)
        yield

    return ctx


def create_app(settings: Settings) -> web.Application:
    app = base_application("user_api")
    app[SETTINGS] = settings
    app[TRUSTED_PROXIES] = frozenset(p.strip() for p in settings.trusted_proxies.split(",") if p.strip())
    deps_ctx = _deps_ctx(settings)
    app.cleanup_ctx.append(
        pg_pool_ctx(
            settings,
            settings.user_db_name,
            migrations=MIGRATIONS,
            create_database=not settings.is_production,
        )
    )
    app.cleanup_ctx.append(redis_ctx(settings))
    app.cleanup_ctx.append(deps_ctx)
    # Publishes user.registered (the welcome message) from the outbox to RabbitMQ.
    app.cleanup_ctx.append(outbox_relay_ctx(settings, listen_dsn=settings.dsn))
    setup_routes(app)
    return app
