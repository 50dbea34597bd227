"""``python -m workers.queues``: a broker with the classic queues of an earlier version, migrated.

Each test gets a vhost of its own, set up as every earlier version left it: Dramatiq's stock
``RabbitmqBroker`` declared the queues (classic), and messages wait in them — work, delayed
retries and dead letters with RabbitMQ's ``x-death``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from tests.integration.workers.conftest import amqp_url
from tests.integration.workers.management import queue_info, scratch_vhost
from workers import dlq, queues
from workers.rabbitmq import QuorumRabbitmqBroker

FAMILY = ("orders", "orders.DQ", "orders.XQ", "notifications", "notifications.DQ", "notifications.XQ")


@pytest.fixture
def legacy_vhost(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with scratch_vhost("legacy") as vhost:
        monkeypatch.setenv("RABBITMQ_VHOST", vhost)
        broker = RabbitmqBroker(url=amqp_url(vhost), confirm_delivery=True)
        for queue in ("orders", "notifications"):
            broker.declare_queue(queue, ensure=True)
        broker.close()
        yield vhost


def message(queue: str, number: int) -> Message[Any]:
    return Message(
        queue_name=queue,
        actor_name=f"{queue}.test",
        args=(number,),
        kwargs={},
        options={},
        message_id=f"{queue}-{number}",
    )


class Legacy:
    """Fills the classic queues through the old broker, as the old workers and relays did."""

    def __init__(self, vhost: str) -> None:
        self.url = amqp_url(vhost)
        self.broker = RabbitmqBroker(url=self.url, confirm_delivery=True)
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()

    def fill(self) -> dict[str, list[bytes]]:
        expected: dict[str, list[bytes]] = {name: [] for name in FAMILY}
        for queue, work, delayed, dead in (("orders", 5, 2, 2), ("notifications", 3, 1, 0)):
            sent = [self.broker.enqueue(message(queue, number)) for number in range(work + dead)]
            for number in range(100, 100 + delayed):
                delayed_copy = self.broker.enqueue(message(queue, number), delay=3_600_000)
                expected[f"{queue}.DQ"].append(delayed_copy.encode())
            # The first ones die as a worker of the earlier version let them: nack, x-death.
            for _ in range(dead):
                method, _, body = self.channel.basic_get(queue, auto_ack=False)
                self.channel.basic_nack(method.delivery_tag, requeue=False)
                expected[f"{queue}.XQ"].append(body)
            expected[queue] = [m.encode() for m in sent[dead:]]
        return expected

    def read_all(self, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
        # A fresh connection: RabbitMQ 3.10 closes a channel that did basic.get on the classic
        # queue and then does it again on its quorum successor (a new one is fine).
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        taken = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                connection.close()
                return taken
            taken.append((body, dict(properties.headers or {})))

    def close(self) -> None:
        self.broker.close()
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def legacy(legacy_vhost: str) -> Iterator[Legacy]:
    filled = Legacy(legacy_vhost)
    yield filled
    filled.close()


def test_status_names_the_queues_to_migrate(legacy: Legacy, capsys: pytest.CaptureFixture[str]) -> None:
    legacy.fill()

    assert queues.main(["status"]) == 1

    out = capsys.readouterr().out
    assert out.count("NEEDS MIGRATION: PRECONDITION_FAILED") == len(FAMILY)
    assert re.search(r"^orders +5 +0  NEEDS MIGRATION", out, re.MULTILINE)  # messages, consumers


def test_migrate_turns_classic_queues_into_quorum_queues_and_keeps_every_message(
    legacy: Legacy, legacy_vhost: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = legacy.fill()
    assert all(queue_info(legacy_vhost, name)["type"] == "classic" for name in FAMILY)

    assert queues.main(["migrate"]) == 0

    out = capsys.readouterr().out
    assert "orders: migrated, 5 message(s) kept" in out
    assert "orders.XQ: migrated, 2 message(s) kept" in out
    assert "notifications.XQ: migrated, 0 message(s) kept" in out  # an empty one too
    for name in FAMILY:
        assert queue_info(legacy_vhost, name)["type"] == "quorum", name
    # The workers, the relays and the DLQ tool declare them without a complaint now.
    current = QuorumRabbitmqBroker(url=legacy.url)
    assert current.get_queue_message_counts("orders") == (5, 2, 2)
    current.close()
    assert queues.main(["status"]) == 0
    for name in FAMILY:
        moved = legacy.read_all(name)
        assert [body for body, _ in moved] == expected[name], name  # all of them, in their order
        if name.endswith(".XQ"):
            assert all(headers["x-death"][0]["reason"] == "rejected" for _, headers in moved)
    assert all(state.leftover < 0 for state in queues.status(legacy.url))  # no temporary queue left


def test_migrate_twice_changes_nothing_the_second_time(
    legacy: Legacy, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy.fill()
    assert queues.main(["migrate"]) == 0
    capsys.readouterr()

    assert queues.main(["migrate"]) == 0

    names = queues.queue_arguments(queues.WORKER_QUEUES)
    assert capsys.readouterr().out.splitlines() == [f"{name}: already current" for name in names]


def test_migrate_refuses_while_a_worker_consumes(legacy: Legacy, capsys: pytest.CaptureFixture[str]) -> None:
    legacy.fill()
    consumer = legacy.connection.channel()
    consumer.basic_qos(prefetch_count=0)
    consumer.basic_consume("orders", lambda *_: None)

    assert queues.main(["migrate", "--queue", "orders"]) == 1

    assert "orders has 1 consumer(s): stop the workers first" in capsys.readouterr().err
    consumer.close()  # what it held goes back
    assert [state.current for state in queues.status(legacy.url, ["orders"])] == [False, False, False]
    assert len(legacy.read_all("orders")) == 5


def test_an_interrupted_migration_is_finished_by_running_it_again(legacy: Legacy, legacy_vhost: str) -> None:
    expected = legacy.fill()
    # As a crash would leave it: part of the queue moved to the temporary queue, the rest not.
    parked = legacy.connection.channel()
    parked.queue_declare("orders.migrating", durable=True, arguments={"x-queue-type": "classic"})
    parked.confirm_delivery()
    first_two = []
    for _ in range(2):
        method, properties, body = parked.basic_get("orders", auto_ack=False)
        parked.basic_publish("", "orders.migrating", body, properties, mandatory=True)
        parked.basic_ack(method.delivery_tag)
        first_two.append(body)
    [state] = [s for s in queues.status(legacy.url, ["orders"]) if s.name == "orders"]
    assert (state.messages, state.leftover) == (3, 2)

    assert queues.main(["migrate", "--queue", "orders"]) == 0

    bodies = [body for body, _ in legacy.read_all("orders")]
    assert bodies[:2] == first_two
    assert bodies == expected["orders"]
    assert queue_info(legacy_vhost, "orders")["type"] == "quorum"
    assert [state.leftover for state in queues.status(legacy.url, ["orders"])] == [-1, -1, -1]


def test_replay_into_a_classic_queue_is_refused_until_it_is_migrated(
    legacy: Legacy, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = legacy.fill()

    assert dlq.main(["replay", "--all"]) == 1

    err = capsys.readouterr().err
    assert err.count("cannot declare 'orders': PRECONDITION_FAILED") == 2
    assert "run `python -m workers.queues migrate`" in err
    assert queues.main(["migrate"]) == 0
    assert dlq.main(["replay", "--all"]) == 0
    replayed = [Message.decode(body) for body, _ in legacy.read_all("orders")][-2:]
    assert [m.encode() for m in replayed] != expected["orders.XQ"]  # they carry their history now
    assert [m.message_id for m in replayed] == [Message.decode(b).message_id for b in expected["orders.XQ"]]
    assert all(m.options["dead_letter_history"][0]["type"] == "rabbitmq.rejected" for m in replayed)
