"""The same template rules in a real worker process (``python -m workers``): it reloads on its own,
rejects a typo, says so on its metrics endpoint and in its log, and gives held notifications back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from notifier import repository
from notifier.fanout import fan_out
from notifier.queue import DeliveryQueue
from tests.integration.notifier.helpers import SmtpServer, order_created_event, wait_until
from tests.integration.notifier.template_flow import ORDER_SUBJECT, save
from tests.integration.workers.conftest import WorkerProcess, amqp_url

TYPO = "BROKEN {{ order.id "


@pytest.fixture
def start_worker(
    notifications_db: str, rabbitmq_vhost: str, smtp: SmtpServer, templates_dir: Path, tmp_path: Path
) -> Iterator[Any]:
    started: list[WorkerProcess] = []
    env = {
        "APP_ENV": "test",
        "LOG_FORMAT": "json",
        "RABBITMQ_VHOST": rabbitmq_vhost,
        "NOTIFICATION_DB_NAME": notifications_db,
        "TEMPLATES_DIR": str(templates_dir),
        "TEMPLATES_RELOAD_INTERVAL_S": "0.1",
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_TIMEOUT_S": "2",
        "MAIL_FROM": "Shop <no-reply@shop.test>",
        "PROVIDER_TIMEOUT_S": "1",
        "DELIVERY_LEASE_S": "3",
    }

    def start() -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path))
        return started[-1]

    yield start
    for process in started:
        process.stop()


async def order_email(pool: asyncpg.Pool, vhost: str) -> tuple[str, str]:
    """An order.created event fanned out and its deliver message published as the API does."""
    event = order_created_event()
    queue = DeliveryQueue(amqp_url(vhost))
    ids: list[str] = []

    async def enqueue(notification_id: str, trace_id: str | None) -> None:
        ids.append(notification_id)
        await queue.enqueue_delivery(notification_id, trace_id=trace_id)

    try:
        await fan_out(pool, event, dispatch=enqueue)
    finally:
        await queue.close()
    return event["data"]["order"]["id"], ids[0]


async def status_is(pool: asyncpg.Pool, notification_id: str, status: str) -> bool:
    row = await repository.get_notification(pool, notification_id)
    return row is not None and row["status"] == status


async def reload_ok(worker: WorkerProcess) -> float | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as response,
        ):
            text = await response.text()
    except aiohttp.ClientError:
        return None
    values = [line.split()[1] for line in text.splitlines() if line.startswith("templates_last_reload_ok ")]
    return float(values[0]) if values else None


def subject_of(smtp: SmtpServer, notification_id: str) -> str:
    [message] = [m for m in smtp.handler.messages if m["X-Notification-Id"] == notification_id]
    return str(message["Subject"])


async def test_a_worker_rejects_a_typo_and_keeps_sending_the_old_subject(
    pool: asyncpg.Pool, rabbitmq_vhost: str, smtp: SmtpServer, templates_dir: Path, start_worker: Any
) -> None:
    worker = start_worker()
    order_id, first = await order_email(pool, rabbitmq_vhost)
    await wait_until(lambda: status_is(pool, first, "sent"), timeout_s=30)
    assert await reload_ok(worker) == 1

    save(templates_dir, ORDER_SUBJECT, TYPO)
    await wait_until(lambda: _equals(reload_ok(worker), 0), timeout_s=30)
    order_id, during = await order_email(pool, rabbitmq_vhost)
    await wait_until(lambda: status_is(pool, during, "sent"), timeout_s=30)

    assert subject_of(smtp, during) == f"We received your order {order_id}"
    logged = worker.output().replace(" ", "")
    assert '"template_file":"email/order.created.subject.txt"' in logged
    assert '"template_line":1' in logged  # the rejection names the line too
    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")
    await wait_until(lambda: _equals(reload_ok(worker), 1), timeout_s=30)
    order_id, after = await order_email(pool, rabbitmq_vhost)
    await wait_until(lambda: status_is(pool, after, "sent"), timeout_s=30)
    assert subject_of(smtp, after) == f"Order {order_id} confirmed"


async def test_a_worker_started_during_a_typo_delivers_what_it_held_once_fixed(
    pool: asyncpg.Pool, rabbitmq_vhost: str, smtp: SmtpServer, templates_dir: Path, start_worker: Any
) -> None:
    save(templates_dir, ORDER_SUBJECT, TYPO)
    start_worker()
    orders = [await order_email(pool, rabbitmq_vhost) for _ in range(2)]
    for _, notification_id in orders:
        await wait_until(lambda i=notification_id: status_is(pool, i, "held"), timeout_s=30)

    save(templates_dir, ORDER_SUBJECT, "Order {{ order.id }} confirmed")

    for _, notification_id in orders:
        await wait_until(lambda i=notification_id: status_is(pool, i, "sent"), timeout_s=30)
    for order_id, notification_id in orders:
        assert subject_of(smtp, notification_id) == f"Order {order_id} confirmed"  # once: [message]
        outcomes = [a["outcome"] for a in await repository.list_attempts(pool, notification_id)]
        assert outcomes == ["held", "sent"]


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)
