"""Issue 17's session: an ops person saves a typo in a template while orders flow, then the fix.

A running notifier (create_app, its own template watcher), the worker's delivery function with
its own renderer and watcher on the same folder, and a real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from notifier.app import create_app
from notifier.delivery import DeliveryDeps, deliver
from notifier.settings import NotifierSettings
from notifier.templates import TemplateRenderer
from tests.integration.notifier.api.conftest import SPEC, Caller
from tests.integration.notifier.helpers import SmtpServer, wait_until
from tests.integration.notifier.template_flow import (
    ORDER_SUBJECT,
    SHIPPED_ORDER_SUBJECT,
    Enqueued,
    place_orders,
    save,
    worker_watcher,
)
from tests.openapi_check import CheckedClient

TYPO = "BROKEN {{ order.id "
FIX = "Your order {{ order.id }} is confirmed"


@pytest.fixture
async def notifier(aiohttp_client: Any, settings: NotifierSettings) -> CheckedClient:
    """The notification API, looking at the templates folder every 50 ms."""
    fast = settings.model_copy(update={"templates_reload_interval_s": 0.05})
    return CheckedClient(await aiohttp_client(create_app(fast)), SPEC)


async def readiness(notifier: CheckedClient) -> dict[str, Any]:
    response = await notifier.get("/health/ready")
    assert response.status == 200  # degraded templates never take the instance out of service
    body: dict[str, Any] = await response.json()
    return body


async def templates_state(notifier: CheckedClient) -> str:
    state: str = (await readiness(notifier))["components"]["templates"]["status"]
    return state


async def _state_is(notifier: CheckedClient, state: str) -> bool:
    return await templates_state(notifier) == state


async def reload_ok_metric(notifier: CheckedClient) -> float:
    text = await (await notifier.get("/metrics")).text()
    [line] = [line for line in text.splitlines() if line.startswith("templates_last_reload_ok ")]
    return float(line.split()[1])


async def statuses(notifier: CheckedClient, admin: Caller, ids: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for notification_id in ids:
        response = await notifier.get(f"/api/notifications/{notification_id}", headers=admin.auth)
        assert response.status == 200
        found[notification_id] = await response.json()
    return found


async def test_a_typo_saved_while_orders_flow_loses_nothing_and_keeps_the_old_subject(
    notifier: CheckedClient,
    admin: Caller,
    pool: asyncpg.Pool,
    deps: DeliveryDeps,
    smtp: SmtpServer,
    templates_dir: Path,
) -> None:
    worker = worker_watcher(deps, pool, Enqueued())
    before = await place_orders(pool, deps, 1)

    save(templates_dir, ORDER_SUBJECT, TYPO)
    await worker.tick()
    assert not deps.renderer.ok
    await wait_until(lambda: _state_is(notifier, "DEGRADED"))
    detail = (await readiness(notifier))["components"]["templates"]["detail"]
    assert "email/order.created.subject.txt line 1: syntax error" in detail
    assert await reload_ok_metric(notifier) == 0
    during = await place_orders(pool, deps, 3)

    save(templates_dir, ORDER_SUBJECT, FIX)
    await worker.tick()
    await wait_until(lambda: _state_is(notifier, "UP"))
    assert await reload_ok_metric(notifier) == 1
    after = await place_orders(pool, deps, 1)

    orders = before + during + after
    assert [order.outcome for order in orders] == ["sent"] * 5
    rows = await statuses(notifier, admin, [order.notification_id for order in orders])
    assert {row["status"] for row in rows.values()} == {"sent"}
    subjects = {m["X-Notification-Id"]: m["Subject"] for m in smtp.handler.messages}
    assert len(smtp.handler.messages) == 5  # one email per order, none twice
    for order in before + during:
        assert subjects[order.notification_id] == f"We received your order {order.order_id}"
    [last] = after
    assert subjects[last.notification_id] == f"Your order {last.order_id} is confirmed"


async def test_held_notifications_show_why_and_are_delivered_once_each_after_the_fix(
    notifier: CheckedClient,
    admin: Caller,
    pool: asyncpg.Pool,
    deps: DeliveryDeps,
    smtp: SmtpServer,
    templates_dir: Path,
    deliver_queue: Any,
) -> None:
    deliver_queue.queue_purge("notifications")
    # A worker (re)started while the typo is saved has no last good set: it holds.
    save(templates_dir, ORDER_SUBJECT, TYPO)
    worker_deps = dataclasses.replace(deps, renderer=TemplateRenderer(templates_dir))
    enqueued = Enqueued()
    worker = worker_watcher(worker_deps, pool, enqueued)
    orders = await place_orders(pool, worker_deps, 3)
    held = [order.notification_id for order in orders]
    assert [order.outcome for order in orders] == ["held"] * 3

    for row in (await statuses(notifier, admin, held)).values():
        assert row["status"] == "held"
        assert row["last_error"].startswith("held until the templates are fixed: template error: ")
        assert "email/order.created.subject.txt line 1: syntax error" in row["last_error"]
        assert [a["outcome"] for a in row["attempt_log"]] == ["held"]
    page = await notifier.get("/api/notifications", params={"status": "held"}, headers=admin.auth)
    assert set(held) <= {item["id"] for item in (await page.json())["items"]}
    assert smtp.handler.messages == []

    save(templates_dir, ORDER_SUBJECT, FIX)
    await worker.tick()
    await wait_until(lambda: _state_is(notifier, "UP"))
    # Whichever process loaded the fix first released them (the API publishes to RabbitMQ).
    published: list[str] = []
    messages = await wait_until(lambda: _released(held, enqueued, deliver_queue, published))
    for notification_id in messages + held:  # every deliver message, plus a duplicate of each
        await deliver(worker_deps, notification_id)

    mine = [m for m in smtp.handler.messages if m["X-Notification-Id"] in held]
    assert sorted(m["X-Notification-Id"] for m in mine) == sorted(held)
    assert {m["Message-ID"] for m in mine} == {f"<{i}@shop.test>" for i in held}
    assert {m["Subject"] for m in mine} == {f"Your order {o.order_id} is confirmed" for o in orders}
    for row in (await statuses(notifier, admin, held)).values():
        assert row["status"] == "sent"
        assert [a["outcome"] for a in row["attempt_log"]] == ["held", "sent"]


def _released(
    held: list[str], enqueued: Enqueued, deliver_queue: Any, published: list[str]
) -> list[str] | None:
    """Every deliver message sent for the held rows so far, once each has one (else None)."""
    while True:
        method, _, raw = deliver_queue.basic_get("notifications", auto_ack=True)
        if method is None:
            break
        published.extend(json.loads(raw)["args"])
    messages = enqueued.ids + published
    return messages if set(held) <= set(messages) else None


async def test_rolling_back_the_typo_clears_the_degraded_state(
    notifier: CheckedClient, templates_dir: Path
) -> None:
    save(templates_dir, ORDER_SUBJECT, TYPO)
    await wait_until(lambda: _state_is(notifier, "DEGRADED"))
    assert (await readiness(notifier))["status"] == "DEGRADED"

    save(templates_dir, ORDER_SUBJECT, SHIPPED_ORDER_SUBJECT)

    await wait_until(lambda: _state_is(notifier, "UP"))
    assert (await readiness(notifier))["status"] == "UP"
