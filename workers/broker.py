"""The Dramatiq broker: RabbitMQ quorum queues with publisher confirms and annotated dead letters
(``workers.rabbitmq``), retries with capped jittered backoff, async actors, Prometheus metrics,
and the worker's own resources.

Middleware order matters: Dramatiq runs ``before_*`` hooks in list order and ``after_*`` hooks in
reverse. So ``RetriesExhausted`` sits before ``Retries`` (it must see Retries' verdict on a
failed message), and ``WorkerResources`` after ``AsyncIO`` (it opens on the loop AsyncIO starts,
and closes before AsyncIO stops it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import structlog
from dramatiq import Broker, Middleware
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq.middleware.prometheus import Prometheus

from common.errors import ServiceError
from common.settings import load_settings
from workers.deadletters import REPLAYS_OPTION
from workers.rabbitmq import QuorumRabbitmqBroker
from workers.resources import WorkerResources, run_on_worker_loop
from workers.settings import WorkerSettings
from workers.tracing import WorkerTracing

log = structlog.get_logger(__name__)

ON_RETRIES_EXHAUSTED = "on_retries_exhausted"
__all__ = [
    "ON_RETRIES_EXHAUSTED",
    "REPLAYS_OPTION",
    "BlamelessRetry",
    "RetriesExhausted",
    "bind_actors",
    "build_broker",
    "setup_broker",
]

# An actor's hook for a message that failed for good: awaited with the message's arguments and
# the error, on the worker's loop, e.g. ``on_retries_exhausted=give_up`` on ``@dramatiq.actor``.
GiveUp = Callable[..., Awaitable[None]]


class BlamelessRetry(dramatiq.Retry, ServiceError):
    """Retry later, though the message's own work did not fail (another attempt holds what it
    needs): running out of retries on it is not its failure, so its give-up hook is not called."""


class RetriesExhausted(Middleware):
    """When a message fails for good (it goes to ``Q.XQ``), await its actor's give-up hook."""

    @property
    def actor_options(self) -> set[str]:
        return {ON_RETRIES_EXHAUSTED}

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or not message.failed:
            return
        if isinstance(exception, BlamelessRetry):
            return  # the attempt that holds the work decides its fate
        actor = broker.actors.get(message.actor_name)
        give_up: GiveUp | None = actor.options.get(ON_RETRIES_EXHAUSTED) if actor else None
        if give_up is not None:
            run_on_worker_loop(give_up(*message.args, error=str(exception)))


def broker_url(settings: WorkerSettings) -> str:
    # Heartbeats let both sides notice a dead peer; a long message does not starve them because
    # Dramatiq's consumer threads keep the connection serviced while worker threads work.
    return (
        f"{settings.amqp_url}?heartbeat={settings.rabbitmq_heartbeat_s}"
        "&connection_attempts=3&retry_delay=2&blocked_connection_timeout=60"
    )


def build_broker(settings: WorkerSettings) -> QuorumRabbitmqBroker:
    middleware: list[Middleware] = [
        # First: its consumer span covers the other hooks, and it sees every message.
        WorkerTracing(settings),
        AgeLimit(),
        TimeLimit(time_limit=settings.worker_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        RetriesExhausted(),
        Retries(
            max_retries=settings.worker_max_retries,
            min_backoff=settings.worker_min_backoff_ms,
            max_backoff=settings.worker_max_backoff_ms,
        ),
        CurrentMessage(),
        AsyncIO(),
        WorkerResources(settings),
    ]
    if settings.workers_metrics_enabled:
        # Its exposition server (a fork of the dramatiq CLI, or with --processes 1 a thread of
        # workers/inprocess.py) reads PROMETHEUS_MULTIPROC_DIR; ``python -m workers`` prepares
        # that directory, see workers/__main__.py.
        middleware.insert(0, Prometheus())
    return QuorumRabbitmqBroker(url=broker_url(settings), confirm_delivery=True, middleware=middleware)


def setup_broker() -> QuorumRabbitmqBroker:
    """Read the settings once, build the broker and make it Dramatiq's global one.

    Called when ``workers.app`` is imported (``dramatiq workers.app``), before the actors are declared:
    ``@dramatiq.actor`` binds each actor to the global broker at import time.
    """
    settings = load_settings(WorkerSettings)
    broker = build_broker(settings)
    dramatiq.set_broker(broker)
    return broker


def bind_actors(broker: Broker, actors: list[dramatiq.Actor[Any, Any]]) -> None:
    """Move already-declared actors to another broker (tests running a Worker on their vhost)."""
    for actor in actors:
        actor.broker = broker
        broker.declare_actor(actor)
