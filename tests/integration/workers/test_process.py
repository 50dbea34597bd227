"""``python -m workers`` as a process: SIGKILL loses nothing, SIGTERM finishes the message in hand."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from notifier import repository
from notifier.fanout import fan_out
from notifier.queue import DeliveryQueue
from tests.integration.notifier.helpers import SmtpServer, user_registered_event, wait_until
from tests.integration.workers.conftest import WorkerProcess, amqp_url


async def queue_welcome_email(pool: asyncpg.Pool, vhost: str) -> str:
    """Fan out a user.registered event and publish its deliver message as the API does."""
    queue = DeliveryQueue(amqp_url(vhost))
    ids: list[str] = []

    async def enqueue(notification_id: str, trace_id: str | None) -> None:
        ids.append(notification_id)
        await queue.enqueue_delivery(notification_id, trace_id=trace_id)

    try:
        await fan_out(pool, user_registered_event(), dispatch=enqueue)
    finally:
        await queue.close()
    return ids[0]


async def status_of(pool: asyncpg.Pool, notification_id: str) -> str | None:
    row = await repository.get_notification(pool, notification_id)
    return None if row is None else str(row["status"])


async def wait_for_status(pool: asyncpg.Pool, notification_id: str, expected: str) -> None:
    async def reached() -> bool:
        return await status_of(pool, notification_id) == expected

    await wait_until(reached, timeout_s=30)


async def test_a_worker_killed_mid_delivery_still_delivers_once_after_restart(
    pool: asyncpg.Pool,
    smtp: SmtpServer,
    rabbitmq_vhost: str,
    worker_process: Callable[[], WorkerProcess],
) -> None:
    smtp.handler.stall_next = True
    first = worker_process()
    notification_id = await queue_welcome_email(pool, rabbitmq_vhost)
    assert await asyncio.to_thread(smtp.handler.stalled.wait, 30), first.output()

    first.signal_group(signal.SIGKILL)  # mid-DATA: the server has not accepted the message
    first.wait()
    smtp.handler.release.set()
    assert await status_of(pool, notification_id) == "sending"

    second = worker_process()
    await wait_for_status(pool, notification_id, "sent")

    assert len(smtp.handler.with_message_id(f"<{notification_id}@shop.test>")) == 1
    outcomes = [a["outcome"] for a in await repository.list_attempts(pool, notification_id)]
    assert outcomes == ["interrupted", "sent"]
    second.signal_group(signal.SIGTERM)
    assert second.wait() == 0, second.output()


@pytest.mark.parametrize("processes", [1, 2])
async def test_sigterm_finishes_the_message_in_hand(
    pool: asyncpg.Pool,
    smtp: SmtpServer,
    rabbitmq_vhost: str,
    worker_process: Callable[..., WorkerProcess],
    processes: int,
) -> None:
    smtp.handler.delay_s = 1.5  # slow, but it accepts
    worker = worker_process(processes)
    notification_id = await queue_welcome_email(pool, rabbitmq_vhost)
    await wait_until(lambda: smtp.handler.data_commands >= 1, timeout_s=30)

    # As deploy.sh stops it: SIGTERM to the whole process group.
    worker.signal_group(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait) == 0, worker.output()

    assert await status_of(pool, notification_id) == "sent"
    assert len(smtp.handler.with_message_id(f"<{notification_id}@shop.test>")) == 1
    assert "worker_resources_closed" in worker.output()


@pytest.mark.parametrize("processes", [1, 2])
async def test_metrics_are_served_for_all_worker_processes(
    pool: asyncpg.Pool,
    smtp: SmtpServer,
    rabbitmq_vhost: str,
    worker_process: Callable[..., WorkerProcess],
    processes: int,
) -> None:
    worker = worker_process(processes)
    notification_id = await queue_welcome_email(pool, rabbitmq_vhost)
    await wait_for_status(pool, notification_id, "sent")

    async def metrics() -> str:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as response,
            ):
                return await response.text()
        except aiohttp.ClientError:
            return ""

    text = await wait_until(metrics, timeout_s=15)
    assert (
        'dramatiq_messages_total{actor_name="notifications.deliver",queue_name="notifications"} 1.0' in text
    )
    assert 'notification_deliveries_total{channel="email",outcome="sent"} 1.0' in text
    # Every process of the worker runs below the APIs' CPU priority (WORKER_NICE, default 10).
    members = group_members(worker.process.pid)
    assert len(members) >= processes
    assert {pid: niceness(pid) for pid in members} == dict.fromkeys(members, 10)


def _stat(pid: int) -> list[str]:
    # The fields after the command name, which may itself hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def niceness(pid: int) -> int:
    return int(_stat(pid)[16])


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[2]) == pgid:
                    members.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return sorted(members)
