"""``python -m workers.dlq``: list (with filters), show, replay (with --dry-run) and purge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from dramatiq import Message

from tests.integration.workers.conftest import amqp_url
from workers import dlq
from workers.deadletters import HISTORY_OPTION
from workers.dlq import DeadLetterQueues, Selection
from workers.rabbitmq import QuorumRabbitmqBroker

TRACEBACK_HEAD = 'Traceback (most recent call last):\n  File "x.py", line 1\n'
TRACEBACK = (
    'Traceback (most recent call last):\n  File "x.py", line 1\ndramatiq.errors.Retry: SMS provider: HTTP 503'
)


class Rabbit:
    def __init__(self, vhost: str) -> None:
        self.url = amqp_url(vhost)
        broker = QuorumRabbitmqBroker(url=self.url)
        broker.declare_queue("notifications", ensure=True)  # with the workers' own arguments
        broker.close()
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()
        self.channel.queue_purge("notifications")

    def kill(self, body: bytes, headers: dict[str, Any] | None = None) -> None:
        properties = pika.BasicProperties(delivery_mode=2, headers=headers)
        self.channel.basic_publish("", "notifications.XQ", body, properties)

    def dead_message(self, **options: Any) -> Message[Any]:
        message: Message[Any] = Message(
            queue_name="notifications",
            actor_name="notifications.deliver",
            args=(str(uuid.uuid4()),),
            kwargs={},
            options={"retries": 2, "traceback": TRACEBACK, "trace_id": "abc", **options},
        )
        self.kill(message.encode())
        return message

    def died(
        self, error_type: str, error: str, *, at: str, actor: str = "notifications.deliver"
    ) -> Message[Any]:
        """A dead letter as the workers write it now: the record in its options."""
        record = {
            "type": error_type,
            "message": error,
            "traceback": f"{TRACEBACK_HEAD}{error_type}: {error}\n",
            "reason": "permanent_error",
            "time": at,
            "host": "worker-1",
            "pid": 4242,
            "actor": actor,
            "queue": "notifications",
            "attempts": 1,
            "replays": 0,
        }
        message: Message[Any] = Message(
            queue_name="notifications",
            actor_name=actor,
            args=(str(uuid.uuid4()),),
            kwargs={},
            options={"trace_id": "abc", "dead_letter": record},
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
    assert body["options"] == {"trace_id": "abc", "dlq_replays": 1}  # an older dead letter: no record
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


def test_list_prints_the_recorded_error_and_filters_by_actor_type_and_time(
    rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    old = rabbit.died("notifier.fanout.InvalidEvent", "no data.user", at="2026-01-01T10:00:00.000Z")
    new = rabbit.died(
        "ValueError",
        "the event carries no valid data.order.id",
        at="2099-01-01T10:00:00.000Z",
        actor="orders.process",
    )

    assert dlq.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "notifier.fanout.InvalidEvent: no data.user" in out
    assert "ValueError: the event carries no valid data.order.id" in out
    assert "2026-01-01 10:00:00" in out

    assert dlq.main(["list", "--actor", "orders.*"]) == 0
    only_orders = capsys.readouterr().out
    assert new.message_id in only_orders
    assert old.message_id not in only_orders

    assert dlq.main(["list", "--error-type", "InvalidEvent"]) == 0
    by_short_type = capsys.readouterr().out
    assert dlq.main(["list", "--error-type", "notifier.fanout.InvalidEvent"]) == 0
    by_full_type = capsys.readouterr().out
    assert old.message_id in by_short_type
    assert old.message_id in by_full_type
    assert new.message_id not in by_short_type + by_full_type

    assert dlq.main(["list", "--since", "2030-01-01"]) == 0
    recent = capsys.readouterr().out
    assert (new.message_id in recent, old.message_id in recent) == (True, False)
    assert dlq.main(["list", "--since", "1d"]) == 0
    assert "1 dead letter(s)" in capsys.readouterr().out  # the one from 2099


def test_a_bad_since_is_a_usage_error(rabbit: Rabbit) -> None:
    with pytest.raises(SystemExit) as exited:
        dlq.main(["list", "--since", "yesterday"])
    assert exited.value.code == 2


def test_show_prints_the_failures_and_the_text_report_the_traceback(
    rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    message = rabbit.died("ValueError", "bad order", at="2026-02-03T04:05:06.000Z")

    assert dlq.main(["show", message.message_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [f["type"] for f in shown["failures"]] == ["ValueError"]
    assert shown["options"]["dead_letter"]["host"] == "worker-1"

    assert dlq.main(["show", "--text", message.message_id]) == 0
    text = capsys.readouterr().out
    assert (
        "failure 1: 2026-02-03T04:05:06.000Z  permanent_error  attempts 1  replays 0  on worker-1 pid 4242"
        in text
    )
    assert "Traceback (most recent call last):" in text
    assert "ValueError: bad order" in text


def test_replay_moves_the_last_failure_into_the_history(rabbit: Rabbit) -> None:
    message = rabbit.died("ValueError", "bad order", at="2026-02-03T04:05:06.000Z")

    assert dlq.main(["replay", message.message_id]) == 0

    body = rabbit.take("notifications")
    assert body is not None
    assert "dead_letter" not in body["options"]
    [earlier] = body["options"][HISTORY_OPTION]
    assert (earlier["type"], earlier["message"], earlier["time"]) == (
        "ValueError",
        "bad order",
        "2026-02-03T04:05:06.000Z",
    )
    assert "traceback" not in earlier  # the history stays short
    assert body["options"]["dlq_replays"] == 1


def test_replay_dry_run_changes_nothing(rabbit: Rabbit, capsys: pytest.CaptureFixture[str]) -> None:
    first = rabbit.died("ValueError", "one", at="2026-02-03T04:05:06.000Z")
    second = rabbit.died("KeyError", "two", at="2026-02-03T04:05:07.000Z")

    assert dlq.main(["replay", "--all", "--dry-run"]) == 0
    assert dlq.main(["replay", "--all", "--dry-run", "--error-type", "KeyError"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"would replay {first.message_id}",
        f"would replay {second.message_id}",
        f"would replay {second.message_id}",
    ]
    assert rabbit.take("notifications") is None
    assert [letter.id for letter in DeadLetterQueues(rabbit.url).list()] == [
        first.message_id,
        second.message_id,
    ]


def test_replay_with_a_filter_takes_only_the_matching_ones(rabbit: Rabbit) -> None:
    kept = rabbit.died("ValueError", "one", at="2026-02-03T04:05:06.000Z")
    replayed = rabbit.died("KeyError", "two", at="2026-02-03T04:05:07.000Z")

    report = DeadLetterQueues(rabbit.url).replay(Selection(error_type="KeyError"))

    assert report.replayed == [replayed.message_id]
    body = rabbit.take("notifications")
    assert body is not None
    assert body["message_id"] == replayed.message_id
    assert [letter.id for letter in DeadLetterQueues(rabbit.url).list()] == [kept.message_id]


def test_a_dead_letter_rabbitmq_moved_itself_is_explained_from_x_death(rabbit: Rabbit) -> None:
    message: Message[Any] = Message(
        queue_name="notifications", actor_name="notifications.deliver", args=("n-1",), kwargs={}, options={}
    )
    x_death = [
        {
            "count": 1,
            "reason": "delivery_limit",
            "queue": "notifications",
            "exchange": "",
            "routing-keys": ["notifications"],
        }
    ]
    rabbit.kill(message.encode(), headers={"x-death": x_death})

    [letter] = DeadLetterQueues(rabbit.url).list(Selection(error_type="rabbitmq.delivery_limit"))

    assert letter.error.startswith("rabbitmq.delivery_limit: redelivered past the queue's x-delivery-limit")
    assert DeadLetterQueues(rabbit.url).replay(None).replayed == [letter.id]
    body = rabbit.take("notifications")
    assert body is not None
    assert [entry["reason"] for entry in body["options"][HISTORY_OPTION]] == ["delivery_limit"]


def test_show_into_a_pipe_closed_early_exits_without_a_traceback(rabbit: Rabbit) -> None:
    """``show --text ID | head -6`` (the runbook's example): a closed reader is not an error report."""
    message = rabbit.died("ValueError", "bad order", at="2026-02-03T04:05:06.000Z")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.dlq", "show", "--text", message.message_id],
        cwd=Path(__file__).resolve().parents[3],
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    # Closed before the tool has connected to RabbitMQ: its first write meets a closed pipe.
    os.close(write_end)
    os.close(read_end)
    _, err = process.communicate(timeout=60)

    assert err.decode() == ""
    assert process.returncode == 1
