"""What the template-reload tests share: saving an edit as an editor would, orders flowing through
fan-out and the worker's delivery function, and a worker's template watcher."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from notifier.delivery import DeliveryDeps, deliver
from notifier.fanout import fan_out
from notifier.held import TemplateWatcher
from tests.integration.notifier.helpers import order_created_event

ORDER_SUBJECT = Path("email") / "order.created.subject.txt"
SHIPPED_ORDER_SUBJECT = "We received your order {{ order.id }}"


def save(templates_dir: Path, relative: Path | str, text: str) -> None:
    """Write a template file with an mtime later than any before it, whatever the clock does."""
    path = templates_dir / relative
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, max(stat.st_mtime_ns, before) + 2_000_000_000))


@dataclass
class Enqueued:
    """An ``Enqueue`` that records the deliver messages a watcher sends."""

    ids: list[str] = field(default_factory=list)

    async def __call__(self, notification_id: str, trace_id: str | None) -> None:
        self.ids.append(notification_id)


def worker_watcher(deps: DeliveryDeps, pool: asyncpg.Pool, enqueued: Enqueued) -> TemplateWatcher:
    """The watcher a worker process runs, ticked by the test instead of by a timer."""
    return TemplateWatcher(
        deps.renderer,
        pool,
        enqueued,
        reload_interval_s=3600,
        sweep_interval_s=3600,
        release_retry_s=300,
    )


@dataclass
class Order:
    order_id: str
    notification_id: str
    outcome: str


async def place_orders(pool: asyncpg.Pool, deps: DeliveryDeps, count: int) -> list[Order]:
    """``count`` order.created events, each fanned out and its email delivered by the worker code."""
    orders = []
    for _ in range(count):
        event = order_created_event()
        enqueued: list[str] = []

        async def enqueue(notification_id: str, trace_id: str | None, into: list[str] = enqueued) -> None:
            into.append(notification_id)

        await fan_out(pool, event, dispatch=enqueue)
        [notification_id] = enqueued  # email only: the contact has SMS and push off
        outcome = await deliver(deps, notification_id)
        orders.append(Order(event["data"]["order"]["id"], notification_id, outcome))
    return orders
