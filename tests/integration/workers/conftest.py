"""Fixtures for the workers: real RabbitMQ (the session's private vhost), a migrated orders
database, and Dramatiq Workers running in-process or as ``python -m workers`` subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from common.migrations import migrate_dsn
from order_api.app import MIGRATIONS as ORDER_MIGRATIONS
from tests.conftest import pg_dsn
from tests.integration.notifier import conftest as notifier_fixtures
from tests.integration.notifier.conftest import PROVIDER_TOKEN, REPO_TEMPLATES, FakeProvider
from tests.integration.notifier.helpers import SmtpServer
from tests.net import free_port
from workers.actors import ACTORS
from workers.app import BROKER
from workers.broker import bind_actors, build_broker
from workers.dlq import DeadLetterQueues
from workers.settings import WorkerSettings

ROOT = REPO_TEMPLATES.parent

# The notification fixtures, shared: the same database, SMTP server, provider and templates.
notifications_db = notifier_fixtures.notifications_db
pool = notifier_fixtures.pool
smtp = notifier_fixtures.smtp
provider = notifier_fixtures.provider
templates_dir = notifier_fixtures.templates_dir


@pytest.fixture(scope="session")
def orders_db(database_factory: Callable[[str], str]) -> str:
    name = database_factory("orders")
    asyncio.run(migrate_dsn(pg_dsn(name), ORDER_MIGRATIONS))
    return name


def amqp_url(vhost: str) -> str:
    return WorkerSettings(rabbitmq_vhost=vhost).amqp_url


@pytest.fixture
def worker_env(
    rabbitmq_vhost: str,
    notifications_db: str,
    orders_db: str,
    smtp: SmtpServer,
    provider: FakeProvider,
    templates_dir: Path,
) -> dict[str, str]:
    """The environment a worker of this test runs with: small retry budget, short lease."""
    return {
        "APP_ENV": "test",
        "LOG_FORMAT": "console",
        "RABBITMQ_VHOST": rabbitmq_vhost,
        "NOTIFICATION_DB_NAME": notifications_db,
        "ORDER_DB_NAME": orders_db,
        "TEMPLATES_DIR": str(templates_dir),
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_TIMEOUT_S": "2",
        "MAIL_FROM": "Shop <no-reply@shop.test>",
        "SMS_PROVIDER_URL": provider.url,
        "SMS_PROVIDER_TOKEN": PROVIDER_TOKEN,
        "PUSH_PROVIDER_URL": provider.url,
        "PUSH_PROVIDER_TOKEN": PROVIDER_TOKEN,
        "PROVIDER_TIMEOUT_S": "1",
        "DELIVERY_LEASE_S": "3",
        "WORKER_MAX_RETRIES": "2",
        "WORKER_MIN_BACKOFF_MS": "100",
        "WORKER_MAX_BACKOFF_MS": "300",
        "DB_POOL_MAX_SIZE": "4",
        "MAX_ORDER_TOTAL": "1000",
    }


def settings_from(env: dict[str, str], **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {key.lower(): value for key, value in env.items()}
    values.update(workers_metrics_enabled=False, **overrides)
    return WorkerSettings(**values)


@pytest.fixture
def dead_letters(rabbitmq_vhost: str) -> Iterator[DeadLetterQueues]:
    queues = DeadLetterQueues(amqp_url(rabbitmq_vhost))
    queues.purge()
    yield queues
    queues.purge()


StartWorker = Callable[..., Awaitable[RabbitmqBroker]]


@pytest.fixture
async def start_worker(worker_env: dict[str, str]) -> AsyncIterator[StartWorker]:
    """Start a real Dramatiq Worker in this process, on the test's vhost and databases.

    The actors are moved to the test's broker for the test and back afterwards. Blocking calls
    run in threads: the fake provider is served by this test's event loop.
    """
    running: list[tuple[Worker, RabbitmqBroker]] = []

    async def start(**overrides: Any) -> RabbitmqBroker:
        broker = build_broker(settings_from(worker_env, **overrides))
        bind_actors(broker, ACTORS)
        await asyncio.to_thread(broker.flush_all)  # leftovers of an earlier test
        worker = Worker(broker, worker_threads=2, worker_timeout=100)
        await asyncio.to_thread(worker.start)
        running.append((worker, broker))
        return broker

    yield start
    for worker, broker in running:
        await asyncio.to_thread(worker.stop, 10_000)
        broker.close()
    bind_actors(BROKER, ACTORS)


class WorkerProcess:
    """``python -m workers`` as deploy.sh runs it, in its own process group."""

    def __init__(self, env: dict[str, str], tmp_path: Path, processes: int = 1) -> None:
        self.metrics_port = free_port()
        self.log = tmp_path / f"worker-{self.metrics_port}.log"
        full_env = {
            **os.environ,
            **env,
            "WORKERS_METRICS_PORT": str(self.metrics_port),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"prometheus-{self.metrics_port}"),
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers", "--processes", str(processes), "--threads", "2"],
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal_group(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def wait(self, timeout_s: float = 30) -> int:
        return self.process.wait(timeout=timeout_s)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def worker_process(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``--processes 1`` runs the worker in that process; more, Dramatiq's master and its forks."""
    started: list[WorkerProcess] = []

    def start(processes: int = 1) -> WorkerProcess:
        process = WorkerProcess(worker_env, tmp_path, processes)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
