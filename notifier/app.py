"""create_app(settings): the notification service as an aiohttp application.

Every resource can be handed in (a test's rolled-back connection, a stand-in queue): what is
passed is used as is and never opened or closed here; what is not is opened by a cleanup
context, as in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import structlog
from aiohttp import web
from redis.asyncio import Redis

from common.auth import TOKEN_VERIFIER, token_verifier
from common.contexts import PG_POOL, REDIS, pg_pool_ctx, redis_ctx
from common.health import Degraded, add_health_check
from common.http_tracing import tracing_ctx
from common.roots import given_or_opened
from common.types import CleanupCtx
from common.web import base_application
from notifier.deps import MIGRATIONS, build_deps
from notifier.held import TemplateWatcher
from notifier.queue import DeliveryQueue
from notifier.routes import setup_routes
from notifier.service import Users
from notifier.settings import NotifierSettings
from notifier.state import DEPS
from notifier.templates import TemplateRenderer
from notifier.users import UserDirectory

__all__ = ["MIGRATIONS", "create_app", "watcher_for"]
log = structlog.get_logger(__name__)


def _deps_ctx(
    settings: NotifierSettings, given_queue: DeliveryQueue | None, given_users: Users | None
) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            queue = given_queue
            if queue is None:
                queue = DeliveryQueue(settings.amqp_url)
                stack.push_async_callback(queue.close)
                try:
                    await queue.check()
                except Exception as exc:  # start anyway: reads work, and readiness names the broker
                    log.warning("rabbitmq_unavailable_at_start", error=str(exc))
            add_health_check(app, "rabbitmq", queue.check)
            users = given_users
            if users is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
                users = UserDirectory(
                    session, settings.user_service_url, timeout_s=settings.user_service_timeout_s
                )
            renderer = TemplateRenderer(settings.templates_dir)
            app[DEPS] = build_deps(app[PG_POOL], renderer, queue, users)
            add_health_check(app, "templates", _templates_check(renderer))
            watcher = watcher_for(settings, renderer, app[PG_POOL], queue)
            watcher.start()
            stack.push_async_callback(watcher.stop)
            yield

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


def create_app(
    settings: NotifierSettings,
    *,
    pool: asyncpg.Pool | None = None,
    redis: Redis | None = None,
    queue: DeliveryQueue | None = None,
    users: Users | None = None,
) -> web.Application:
    app = base_application("notifier")
    # First: the TracerProvider outlives every other context (their last spans get exported).
    app.cleanup_ctx.append(tracing_ctx("notifier", settings))
    app[TOKEN_VERIFIER] = token_verifier(
        settings, production=settings.is_production, redis=lambda: app[REDIS]
    )
    database = pg_pool_ctx(
        settings,
        settings.notification_db_name,
        migrations=MIGRATIONS,
        create_database=not settings.is_production,
    )
    given_or_opened(app, PG_POOL, pool, database)
    given_or_opened(app, REDIS, redis, redis_ctx(settings))
    app.cleanup_ctx.append(_deps_ctx(settings, queue, users))
    setup_routes(app)
    return app
