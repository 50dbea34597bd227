"""Held notifications: a template error parks them, a good template set gives them back, once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import asyncpg
from prometheus_client import REGISTRY

from notifier import repository
from notifier.delivery import DeliveryDeps, deliver
from notifier.templates import TemplateRenderer
from tests.integration.notifier.helpers import SmtpServer, wait_until
from tests.integration.notifier.template_flow import (
    ORDER_SUBJECT,
    Enqueued,
    place_orders,
    save,
    worker_watcher,
)


async def outcomes_of(pool: asyncpg.Pool, notification_id: str) -> list[str]:
    return [row["outcome"] for row in await repository.list_attempts(pool, notification_id)]


def started_with_a_typo(deps: DeliveryDeps, templates_dir: Path) -> DeliveryDeps:
    """A worker that starts while the typo is saved: it has no good set to fall back on."""
    save(templates_dir, ORDER_SUBJECT, "BROKEN {{ order.id ")
    return dataclasses.replace(deps, renderer=TemplateRenderer(templates_dir))


async def test_a_worker_started_during_a_typo_holds_and_the_fix_delivers_each_once(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, templates_dir: Path
) -> None:
    worker = started_with_a_typo(deps, templates_dir)
    enqueued = Enqueued()
    watcher = worker_watcher(worker, pool, enqueued)
    await watcher.tick()  # not a clean set: nothing is released
    assert enqueued.ids == []

    orders = await place_orders(pool, worker, 3)
    assert [order.outcome for order in orders] == ["held"] * 3
    held = [order.notification_id for order in orders]
    # A duplicate message meets the same set: not claimed, no new attempt.
    assert await deliver(worker, held[0]) == "held"
    assert await outcomes_of(pool, held[0]) == ["held"]
    assert smtp.handler.messages == []

    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")
    assert await watcher.tick() >= 3
    assert set(held) <= set(enqueued.ids)
    for notification_id in enqueued.ids + held:  # every message, and a duplicate of each
        await deliver(worker, notification_id)

    mine = [m for m in smtp.handler.messages if m["X-Notification-Id"] in held]
    assert sorted(m["X-Notification-Id"] for m in mine) == sorted(held)
    assert {m["Subject"] for m in mine} == {f"Order {order.order_id} confirmed" for order in orders}
    for notification_id in held:
        assert await outcomes_of(pool, notification_id) == ["held", "sent"]
    assert REGISTRY.get_sample_value("templates_last_reload_ok") == 1


async def test_a_release_is_sent_once_until_the_retry_time_has_passed(
    pool: asyncpg.Pool, deps: DeliveryDeps, templates_dir: Path
) -> None:
    worker = started_with_a_typo(deps, templates_dir)
    [order] = await place_orders(pool, worker, 1)
    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")
    first, again = Enqueued(), Enqueued()

    await worker_watcher(worker, pool, first).tick()
    await worker_watcher(worker, pool, again).tick()  # another process, same new set

    assert order.notification_id in first.ids
    assert order.notification_id not in again.ids
    # The first message was lost: once the retry time has passed, a sweep sends another.
    late = dataclasses.replace(worker_watcher(worker, pool, again), release_retry_s=0.01)
    await asyncio.sleep(0.05)
    await late.tick()
    assert order.notification_id in again.ids
    assert await repository.get_notification(pool, order.notification_id) is not None


async def test_a_row_the_fixed_set_still_cannot_render_is_held_again_with_the_new_set(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, templates_dir: Path
) -> None:
    worker = started_with_a_typo(deps, templates_dir)
    [order] = await place_orders(pool, worker, 1)
    # "Fixed" with a variable the sample has and the real order does not.
    sample = templates_dir / "samples" / "order.created.json"
    sample.write_text(
        sample.read_text().replace('"status": "PENDING",', '"status": "PENDING", "coupon": "X",')
    )
    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} with {{ order.coupon }}")
    enqueued = Enqueued()
    watcher = worker_watcher(worker, pool, enqueued)
    await watcher.tick()
    assert order.notification_id in enqueued.ids

    assert await deliver(worker, order.notification_id) == "held"

    row = await repository.get_notification(pool, order.notification_id)
    assert row is not None
    assert row["status"] == "held"
    assert "coupon" in row["last_error"]
    assert await outcomes_of(pool, order.notification_id) == ["held", "held"]
    assert smtp.handler.messages == []
    # Held with the set that serves: the next tick of that set does not release it again.
    again = Enqueued()
    await worker_watcher(worker, pool, again).tick()
    assert order.notification_id not in again.ids


async def test_a_process_that_has_not_seen_the_fix_yet_reloads_before_giving_up(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, templates_dir: Path
) -> None:
    worker = started_with_a_typo(deps, templates_dir)
    [order] = await place_orders(pool, worker, 1)
    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")

    # Another process released it; this one's watcher has not ticked since the fix.
    assert await deliver(worker, order.notification_id) == "sent"
    assert len(smtp.handler.messages) == 1


async def test_the_watcher_runs_in_the_background_and_reports_the_held_count(
    pool: asyncpg.Pool, deps: DeliveryDeps, templates_dir: Path
) -> None:
    worker = started_with_a_typo(deps, templates_dir)
    await place_orders(pool, worker, 1)
    enqueued = Enqueued()
    watcher = dataclasses.replace(worker_watcher(worker, pool, enqueued), reload_interval_s=0.05)
    watcher.start()
    try:
        await wait_until(lambda: (REGISTRY.get_sample_value("notifications_held") or 0) >= 1)
        save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")
        await wait_until(lambda: worker.renderer.ok and enqueued.ids)
    finally:
        await watcher.stop()


async def test_a_template_missing_at_start_holds_and_putting_it_back_delivers_once(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, templates_dir: Path
) -> None:
    # The email's text part was deleted (or not yet copied) when the worker started.
    text = templates_dir / "email" / "order.created.text.txt"
    original = text.read_text()
    text.unlink()
    worker = dataclasses.replace(deps, renderer=TemplateRenderer(templates_dir))
    assert not worker.renderer.ok
    [order] = await place_orders(pool, worker, 1)
    assert order.outcome == "held"
    row = await repository.get_notification(pool, order.notification_id)
    assert row is not None
    assert "email/order.created.text.txt: no such template" in row["last_error"]

    save(templates_dir, "email/order.created.text.txt", original)
    enqueued = Enqueued()
    await worker_watcher(worker, pool, enqueued).tick()
    assert order.notification_id in enqueued.ids  # with any other test's held rows
    assert await deliver(worker, order.notification_id) == "sent"
    assert await deliver(worker, order.notification_id) == "sent"  # a duplicate: nothing more

    assert [m["X-Notification-Id"] for m in smtp.handler.messages] == [order.notification_id]
    assert await outcomes_of(pool, order.notification_id) == ["held", "sent"]
