"""create_app(settings): the notification service as an aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from common.auth import TOKEN_VERIFIER, redis_revocation_check
from common.db import PG_POOL, pg_pool_ctx
from common.health import Degraded, add_health_check
from common.jwt import TokenVerifier, load_public_key
from common.redis import REDIS, redis_ctx
from common.types import CleanupCtx
from common.web import base_application
from notifier.held import TemplateWatcher
from notifier.queue import DeliveryQueue
from notifier.routes import setup_routes
from notifier.service import Deps
from notifier.settings import NotifierSettings
from notifier.state import DEPS, SETTINGS
from notifier.templates import TemplateRenderer
from notifier.users import UserDirectory

MIGRATIONS = [("notifier", Path(__file__).parent / "sql")]
log = structlog.get_logger(__name__)


def _deps_ctx(settings: NotifierSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        public_key = load_public_key(settings, production=settings.is_production)
        redis = app[REDIS]
        app[TOKEN_VERIFIER] = TokenVerifier(
            public_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            is_revoked=redis_revocation_check(lambda: redis),
        )
        queue = DeliveryQueue(settings.amqp_url)
        try:
            await queue.check()
        except Exception as exc:  # start anyway: reads work, and readiness names the broker
            log.warning("rabbitmq_unavailable_at_start", error=str(exc))
        add_health_check(app, "rabbitmq", queue.check)
        async with aiohttp.ClientSession() as session:
            users = UserDirectory(
                session, settings.user_service_url, timeout_s=settings.user_service_timeout_s
            )
            renderer = TemplateRenderer(settings.templates_dir)
            app[DEPS] = Deps(app[PG_POOL], renderer, queue, users)
            add_health_check(app, "templates", _templates_check(renderer))
            watcher = watcher_for(settings, renderer, app[PG_POOL], queue)
            watcher.start()
            yield
            await watcher.stop()
        await queue.close()

    return ctx


def watcher_for(
    settings: NotifierSettings, renderer: TemplateRenderer, pool: asyncpg.Pool, queue: DeliveryQueue
) -> TemplateWatcher:
    async def enqueue(notification_id: str, trace_id: str | None) -> None:
        await queue.enqueue_delivery(notification_id, trace_id=trace_id)

    return TemplateWatcher(
        renderer,
        pool,
        enqueue,
        reload_interval_s=settings.templates_reload_interval_s,
        sweep_interval_s=settings.held_sweep_interval_s,
        release_retry_s=settings.held_release_retry_s,
    )


def _templates_check(renderer: TemplateRenderer) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        if not renderer.ok:
            problems = renderer.problems
            raise Degraded(
                f"serving the last good templates; {len(problems)} problem(s) in "
                f"{renderer.folder}, first: {problems[0]}"
            )

    return check


def create_app(settings: NotifierSettings) -> web.Application:
    app = base_application("notifier")
    app[SETTINGS] = settings
    app.cleanup_ctx.append(
        pg_pool_ctx(
            settings,
            settings.notification_db_name,
            migrations=MIGRATIONS,
            create_database=not settings.is_production,
        )
    )
    app.cleanup_ctx.append(redis_ctx(settings))
    app.cleanup_ctx.append(_deps_ctx(settings))
    setup_routes(app)
    return app
