"""Quorum queues: what the workers declare, and a poison message stopped by the delivery limit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import requests

from common.amqp import DELIVERY_LIMIT
from tests.integration.workers.conftest import ROOT, StartWorker, amqp_url
from tests.integration.workers.management import queue_info
from tests.integration.workers.poison_worker import (
    IDLE_EXIT_CODE,
    KILLED_EXIT_CODE,
    POISON_ACTOR,
    poison_broker,
)
from workers.dlq import DeadLetterQueues

POISON_LIMIT = 2


def declared_queue(vhost: str, name: str) -> dict[str, Any]:
    """The queue as RabbitMQ holds it, once a consumer thread has declared it: Worker.start
    returns before its consumers have connected (each declares its queues as it starts)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return queue_info(vhost, name)
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


async def test_the_workers_declare_their_queues_as_quorum_queues(
    start_worker: StartWorker, rabbitmq_vhost: str
) -> None:
    await start_worker()

    for queue in ("orders", "notifications"):
        for name in (queue, f"{queue}.DQ"):
            declared = await asyncio.to_thread(declared_queue, rabbitmq_vhost, name)
            assert declared["type"] == "quorum", name
            assert declared["arguments"]["x-delivery-limit"] == DELIVERY_LIMIT
            assert declared["arguments"]["x-dead-letter-routing-key"] == f"{queue}.XQ"
        dead = await asyncio.to_thread(declared_queue, rabbitmq_vhost, f"{queue}.XQ")
        assert dead["type"] == "quorum"
        assert "x-delivery-limit" not in dead["arguments"]  # browsing must never drop a dead letter


def counts(url: str, queue: str) -> tuple[int, int]:
    """(ready in the queue, in its dead-letter queue)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        ready = channel.queue_declare(queue, passive=True).method.message_count
        dead = channel.queue_declare(f"{queue}.XQ", passive=True).method.message_count
        return ready, dead
    finally:
        connection.close()


def settled(url: str, queue: str) -> tuple[int, int]:
    """Wait until RabbitMQ has put the message back or dead-lettered it (it does so just after
    the consumer's connection dropped)."""
    deadline = time.monotonic() + 15
    while True:
        ready, dead = counts(url, queue)
        if ready + dead == 1 or time.monotonic() > deadline:
            return ready, dead
        time.sleep(0.05)


@pytest.fixture
def poison_queue(rabbitmq_vhost: str) -> Iterator[str]:
    queue = f"poison_{uuid.uuid4().hex[:8]}"
    broker, actor = poison_broker(amqp_url(rabbitmq_vhost), queue, POISON_LIMIT)
    actor.send()  # declares the queues (delivery limit POISON_LIMIT) and publishes the message
    broker.close()
    yield queue
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(rabbitmq_vhost)))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    connection.close()


def test_a_poison_message_that_kills_its_worker_stops_at_the_delivery_limit_in_the_dead_letter_queue(
    rabbitmq_vhost: str, poison_queue: str
) -> None:
    url = amqp_url(rabbitmq_vhost)
    exit_codes: list[int] = []
    while counts(url, poison_queue) == (1, 0) and len(exit_codes) <= POISON_LIMIT + 1:
        worker = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.integration.workers.poison_worker",
                url,
                poison_queue,
                str(POISON_LIMIT),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        exit_codes.append(worker.returncode)
        assert worker.returncode in (KILLED_EXIT_CODE, IDLE_EXIT_CODE), worker.stderr.decode()[-2000:]
        settled(url, poison_queue)

    # The first delivery and POISON_LIMIT redeliveries each killed a worker; then RabbitMQ stopped.
    assert exit_codes == [KILLED_EXIT_CODE] * (POISON_LIMIT + 1)
    assert counts(url, poison_queue) == (0, 1)
    [letter] = DeadLetterQueues(url, [f"{poison_queue}.XQ"]).list()
    assert letter.actor == POISON_ACTOR
    assert letter.error_type == "rabbitmq.delivery_limit"
    assert "x-delivery-limit" in letter.error
    record = letter.record
    assert record is not None
    assert record["queue"] == poison_queue
