"""``python -m workers.dlq``: list, show, replay and purge the dead-letter queues."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from tests.workers.conftest import amqp_url
from workers import dlq
from workers.dlq import DeadLetterQueues

TRACEBACK = (
    'Traceback (most recent call last):\n  File "x.py", line 1\ndramatiq.errors.Retry: SMS provider: HTTP 503'
)


class Rabbit:
    def __init__(self, vhost: str) -> None:
        self.url = amqp_url(vhost)
        broker = RabbitmqBroker(url=self.url)
        broker.declare_queue("notifications", ensure=True)  # with Dramatiq's own arguments
        broker.close()
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()
        self.channel.queue_purge("notifications")

    def kill(self, body: bytes) -> None:
        self.channel.basic_publish("", "notifications.XQ", body, pika.BasicProperties(delivery_mode=2))

    def dead_message(self, **options: Any) -> Message[Any]:
        message = Message(
            queue_name="notifications",
            actor_name="notifications.deliver",
            args=(str(uuid.uuid4()),),
            kwargs={},
            options={"retries": 2, "traceback": TRACEBACK, "trace_id": "abc", **options},
        )
        self.kill(message.encode())
        return message

    def take(self, queue: str) -> dict[str, Any] | None:
        method, _, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else dict(json.loads(body))


@pytest.fixture
def rabbit(
    rabbitmq_vhost: str, dead_letters: DeadLetterQueues, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rabbit]:
    monkeypatch.setenv("RABBITMQ_VHOST", rabbitmq_vhost)
    rabbit = Rabbit(rabbitmq_vhost)
    yield rabbit
    rabbit.connection.close()


def test_list_shows_each_dead_letter_and_leaves_it_there(
    rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    message = rabbit.dead_message()

    assert dlq.main(["list"]) == 0
    assert dlq.main(["list"]) == 0

    out = capsys.readouterr().out
    assert out.count(message.message_id) == 2
    assert "notifications.deliver" in out
    assert "dramatiq.errors.Retry: SMS provider: HTTP 503" in out


def test_show_prints_the_whole_message(rabbit: Rabbit, capsys: pytest.CaptureFixture[str]) -> None:
    message = rabbit.dead_message()

    assert dlq.main(["show", message.message_id]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["dead_letter_queue"] == "notifications.XQ"
    assert shown["args"] == list(message.args)
    assert shown["options"]["traceback"] == TRACEBACK


def test_show_an_unknown_id_fails(rabbit: Rabbit, capsys: pytest.CaptureFixture[str]) -> None:
    assert dlq.main(["show", "no-such-id"]) == 1
    assert "no dead letter no-such-id" in capsys.readouterr().err


def test_replay_republishes_to_the_original_queue_with_retries_reset(rabbit: Rabbit) -> None:
    replayed, kept = rabbit.dead_message(), rabbit.dead_message()

    assert dlq.main(["replay", replayed.message_id]) == 0

    body = rabbit.take("notifications")
    assert body is not None
    assert (body["message_id"], body["actor_name"], body["args"]) == (
        replayed.message_id,
        "notifications.deliver",
        list(replayed.args),
    )
    assert body["options"] == {"trace_id": "abc", "dlq_replays": 1}
    assert rabbit.take("notifications") is None
    assert [letter.id for letter in DeadLetterQueues(rabbit.url).list()] == [kept.message_id]


def test_replay_all_takes_every_dead_letter_once(rabbit: Rabbit) -> None:
    first, second = rabbit.dead_message(), rabbit.dead_message()

    assert dlq.main(["replay", "--all"]) == 0

    taken = [rabbit.take("notifications"), rabbit.take("notifications"), rabbit.take("notifications")]
    assert [body["message_id"] if body else None for body in taken] == [
        first.message_id,
        second.message_id,
        None,
    ]


def test_replay_refuses_past_the_limit_and_names_missing_ids(
    rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    tired = rabbit.dead_message(dlq_replays=3)

    assert dlq.main(["replay", tired.message_id, "not-there"]) == 1

    err = capsys.readouterr().err
    assert f"refused  {tired.message_id}: already replayed 3 time(s) (limit 3)" in err
    assert "missing  not-there" in err
    assert rabbit.take("notifications") is None
    assert [letter.id for letter in DeadLetterQueues(rabbit.url).list()] == [tired.message_id]


def test_a_message_that_is_not_dramatiq_is_listed_but_never_replayed(rabbit: Rabbit) -> None:
    rabbit.kill(b"\x00 not json")
    queues = DeadLetterQueues(rabbit.url)

    [letter] = queues.list()
    report = queues.replay(None)

    assert letter.id.startswith("undecodable-")
    assert report.replayed == []
    assert len(queues.list()) == 1


def test_replay_needs_ids_or_all(rabbit: Rabbit) -> None:
    with pytest.raises(SystemExit) as exited:
        dlq.main(["replay"])
    assert exited.value.code == 2


def test_purge_asks_for_yes_then_empties_the_queues(
    rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    rabbit.dead_message()
    rabbit.dead_message()

    assert dlq.main(["purge"]) == 2
    assert len(DeadLetterQueues(rabbit.url).list()) == 2

    assert dlq.main(["purge", "--yes"]) == 0
    assert "purged 2 message(s) from notifications.XQ" in capsys.readouterr().out
    assert DeadLetterQueues(rabbit.url).list() == []
