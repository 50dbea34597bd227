"""The Dramatiq broker: RabbitMQ quorum queues with publisher confirms and annotated dead letters
(``workers.rabbitmq``), retries with capped jittered backoff, async actors, Prometheus metrics,
and the worker's own resources.

Middleware order matters: Dramatiq runs ``before_*`` hooks in list order and ``after_*`` hooks in
reverse. So ``DeadLetterStatus`` sits before ``Retries`` (it must see Retries' verdict on a
failed message), and ``WorkerResources`` after ``AsyncIO`` (it opens on the loop AsyncIO starts,
and closes before AsyncIO stops it).
"""

from __future__ import annotations

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

from common.settings import load_settings
from notifier.delivery import mark_dead
from workers.deadletters import REPLAYS_OPTION
from workers.rabbitmq import QuorumRabbitmqBroker
from workers.resources import WorkerResources, resources, run_on_worker_loop
from workers.settings import WorkerSettings
from workers.tracing import WorkerTracing

log = structlog.get_logger(__name__)

DELIVER_ACTOR = "notifications.deliver"
__all__ = [
    "REPLAYS_OPTION",
    "DeadLetterStatus",
    "DeliveryBusy",
    "bind_actors",
    "build_broker",
    "setup_broker",
]


class DeliveryBusy(dramatiq.Retry):
    """Another attempt holds the notification's lease; not a failure of this notification."""


class DeadLetterStatus(Middleware):
    """When Retries gives up on a deliver message (it goes to ``notifications.XQ``), mark the row dead."""

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or not message.failed or message.actor_name != DELIVER_ACTOR:
            return
        if isinstance(exception, DeliveryBusy) or not message.args:
            return  # the attempt that holds the lease decides the row's fate
        notification_id = str(message.args[0])
        error = f"retries exhausted: {exception}"[:1000]
        run_on_worker_loop(mark_dead(resources().notifications_pool, notification_id, error))


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
        DeadLetterStatus(),
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
        # Its exposition server (a fork of the dramatiq CLI) reads PROMETHEUS_MULTIPROC_DIR;
        # ``python -m workers`` prepares that directory, see workers/__main__.py.
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
