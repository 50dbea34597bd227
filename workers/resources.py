"""What the actors work with (database pools, HTTP session, renderer), owned by the worker process.

Dramatiq runs async actors on one event-loop thread per worker process (the AsyncIO middleware).
asyncpg pools and aiohttp sessions belong to the loop they were created on, so they are opened
on that loop in ``before_worker_boot`` and closed in ``after_worker_shutdown`` — after the
worker threads have finished the messages in hand, and before the loop stops.

Actors reach them through ``resources()``: Dramatiq gives actors no other way in, so this one
process-wide slot (set by the middleware, never at import) is the exception to "pass it in".
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import asyncpg
import structlog
from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import MiddlewareError

from common.db import create_pool
from common.errors import ServiceError
from common.logging import configure_logging
from common.logsink import stop_batching
from common.migrations import ensure_database, migrate_dsn
from common.outbox import HandedOnMarks
from notifier.channels.http import Session, new_session
from notifier.delivery import DeliveryDeps
from notifier.deps import MIGRATIONS as NOTIFIER_MIGRATIONS
from notifier.deps import build_delivery_deps
from notifier.held import TemplateWatcher
from notifier.queue import DeliveryQueue
from notifier.templates import TemplateRenderer
from workers.settings import WorkerSettings

log = structlog.get_logger(__name__)
DUPLICATE_SIGTERM_WINDOW_S = 5.0


class ResourcesUnavailable(MiddlewareError, ServiceError):
    """The worker cannot open what it needs; it stops instead of failing every message."""


@dataclass
class Resources:
    settings: WorkerSettings
    orders_pool: asyncpg.Pool
    notifications_pool: asyncpg.Pool
    http: Session
    delivery: DeliveryDeps
    # Deliver messages from async code (the fan-out, the template watcher): aiormq on this
    # loop, confirmed and mandatory; pika's Actor.send would block the loop.
    queue: DeliveryQueue
    # Reloads the templates (all-or-nothing) and gives held notifications back (notifier.held).
    templates: TemplateWatcher
    # The held events orders.process handed on, marked a window at a time.
    handed_on: HandedOnMarks


_current: Resources | None = None


def resources() -> Resources:
    if _current is None:
        raise RuntimeError("worker resources are not open (is WorkerResources on the broker?)")
    return _current


async def open_resources(settings: WorkerSettings) -> Resources:
    notifications_dsn = settings.dsn_for(settings.notification_db_name)
    if not settings.is_production:
        await ensure_database(settings.dsn_for("postgres"), settings.notification_db_name)
    # The API applies the same migrations; the advisory lock makes concurrent runs safe.
    await migrate_dsn(notifications_dsn, NOTIFIER_MIGRATIONS)
    notifications_pool = await create_pool(notifications_dsn, min_size=1, max_size=settings.db_pool_max_size)
    # min_size=0: the order database belongs to order_api and may come up later; orders.process
    # fails and retries until it does, while notifications keep flowing.
    orders_pool = await create_pool(
        settings.dsn_for(settings.order_db_name), min_size=0, max_size=settings.db_pool_max_size
    )
    http = new_session()
    renderer = TemplateRenderer(settings.templates_dir)
    delivery = build_delivery_deps(settings, notifications_pool, renderer, http)
    queue = DeliveryQueue(settings.amqp_url)  # connects on first use

    async def enqueue(notification_id: str, trace_id: str | None) -> None:
        await queue.enqueue_delivery(notification_id, trace_id=trace_id)

    templates = TemplateWatcher(
        renderer,
        notifications_pool,
        enqueue,
        reload_interval_s=settings.templates_reload_interval_s,
        sweep_interval_s=settings.held_sweep_interval_s,
        release_retry_s=settings.held_release_retry_s,
    )
    templates.start()
    handed_on = HandedOnMarks(orders_pool, linger_s=settings.handed_on_linger_ms / 1000)
    return Resources(settings, orders_pool, notifications_pool, http, delivery, queue, templates, handed_on)


async def close_resources(opened: Resources) -> None:
    await opened.templates.stop()
    await opened.queue.close()
    await opened.http.close()
    await opened.notifications_pool.close()
    await opened.handed_on.aclose()
    await opened.orders_pool.close()


class WorkerResources(Middleware):
    """Opens and closes ``Resources`` on the AsyncIO middleware's loop; must come after it."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: Broker) -> None:
        # Only the dramatiq CLI emits this, in each worker process (main thread): logs become ECS
        # JSON there, while importing ``workers`` (tests, the DLQ tool) leaves logging alone.
        configure_logging("workers", self.settings.log_level, self.settings.log_format)
        ignore_repeated_sigterm()

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        global _current
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise ResourcesUnavailable("the AsyncIO middleware must come before WorkerResources")
        try:
            _current = loop_thread.run_coroutine(open_resources(self.settings))
        except Exception as exc:
            log.critical("worker_resources_unavailable", error=f"{type(exc).__name__}: {exc}")
            # The loop thread is not a daemon: stop it, or the failed process would never exit.
            loop_thread.stop()  # type: ignore[no-untyped-call]
            raise ResourcesUnavailable(f"cannot open worker resources: {exc}") from exc
        log.info("worker_resources_open", notification_db=self.settings.notification_db_name)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        global _current
        opened, _current = _current, None
        loop_thread = get_event_loop_thread()
        if opened is not None and loop_thread is not None:
            loop_thread.run_coroutine(close_resources(opened))
            log.info("worker_resources_closed")
        # Dramatiq closes this process's pipe to its master before the process ends: held log
        # lines go now, and the last few lines of the shutdown at once.
        stop_batching()


def ignore_repeated_sigterm(window_s: float = DUPLICATE_SIGTERM_WINDOW_S) -> None:
    """Treat a second SIGTERM arriving right after the first as the same request.

    deploy.sh (like most supervisors) signals the whole process group, and Dramatiq's master
    forwards SIGTERM to each worker as well, so every worker gets two at once. Dramatiq reads a
    second SIGTERM as "kill now" and exits without finishing the message in hand (and then hangs
    on its non-daemon threads). A repeat after the window still escalates as Dramatiq intends.
    """
    dramatiq_handler = signal.getsignal(signal.SIGTERM)
    if not callable(dramatiq_handler):
        return
    last_s = -window_s

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal last_s
        now = time.monotonic()
        if now - last_s < window_s:
            return
        last_s = now
        dramatiq_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def run_on_worker_loop(coro: Any) -> Any:
    """Run a coroutine on the worker's loop from a worker thread (middleware hooks are sync)."""
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError("no worker event loop")
    return loop_thread.run_coroutine(coro)
