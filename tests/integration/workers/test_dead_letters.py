"""Dead letters say why they died: a real Worker on the test vhost, each way a message can die.

The record is read back as an operator would: ``python -m workers.dlq list/show`` and the
RabbitMQ management API's *Get messages* (the UI's view of the x-error-* headers).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pika.exceptions
import pytest

from common.events import (
    FAN_OUT_NOTIFICATIONS,
    ORDER_CREATED,
    PROCESS_ORDER,
    deliver_message,
    event_message,
)
from notifier.fanout import notification_id_for
from tests.integration.notifier.conftest import FakeProvider
from tests.integration.notifier.helpers import contact, user_registered_event, wait_until
from tests.integration.workers.conftest import StartWorker
from tests.integration.workers.management import get_messages
from tests.integration.workers.test_worker import (
    SMS_USER,
    outcomes,
    publish,
    sms_that_cannot_be_sent,
    wait_for_status,
)
from workers import dlq
from workers.deadletters import TRACEBACK_FRAMES, TRACEBACK_MAX_CHARS, bounded_traceback
from workers.dlq import DeadLetter, DeadLetterQueues


async def one_dead_letter(dead_letters: DeadLetterQueues) -> DeadLetter:
    letters: list[DeadLetter] = await wait_until(lambda: asyncio.to_thread(dead_letters.list), timeout_s=30)
    [letter] = letters
    return letter


def assert_written_by_this_worker(record: dict[str, Any]) -> None:
    died = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert datetime.now(UTC) - died < timedelta(minutes=5)
    # The in-process Worker of start_worker runs in this very process.
    assert (record["host"], record["pid"]) == (socket.gethostname(), os.getpid())


async def test_retries_exhausted_records_the_last_error_and_the_attempts(
    start_worker: StartWorker, pool: asyncpg.Pool, provider: FakeProvider, dead_letters: DeadLetterQueues
) -> None:
    _broker, sms_id = await sms_that_cannot_be_sent(start_worker, provider)

    letter = await one_dead_letter(dead_letters)
    record = letter.record
    assert record is not None
    assert letter.message is not None
    assert (record["type"], record["reason"], record["actor"], record["queue"]) == (
        "dramatiq.errors.Retry",
        "retries_exhausted",
        "notifications.deliver",
        "notifications",
    )
    assert "HTTP 503" in record["message"]
    assert (record["attempts"], record["replays"]) == (3, 0)  # first try + WORKER_MAX_RETRIES=2
    assert_written_by_this_worker(record)
    # The chain: the provider's TransientFailure, then the Retry raised from it, last frames only.
    assert "notifier.channels.TransientFailure" in record["traceback"]
    assert record["traceback"].rstrip().splitlines()[-1].startswith("dramatiq.errors.Retry: ")
    assert len(record["traceback"]) <= TRACEBACK_MAX_CHARS
    assert letter.headers["x-error-type"] == "dramatiq.errors.Retry"
    assert letter.headers["x-error-attempts"] == 3
    assert "traceback" not in letter.message.options  # Retries' unbounded one: only the record's stays
    await wait_for_status(pool, sms_id, "dead")


async def test_a_throws_exception_is_recorded_at_once_as_permanent(
    start_worker: StartWorker, dead_letters: DeadLetterQueues
) -> None:
    broker = await start_worker()
    event = user_registered_event()
    del event["data"]["user"]["email"]

    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))

    letter = await one_dead_letter(dead_letters)
    record = letter.record
    assert record is not None
    assert (record["type"], record["reason"], record["attempts"]) == (
        "notifier.fanout.InvalidEvent",
        "permanent_error",
        1,
    )
    assert record["message"]
    assert "InvalidEvent" in record["traceback"].rstrip().splitlines()[-1]
    assert_written_by_this_worker(record)
    assert letter.error == f"notifier.fanout.InvalidEvent: {record['message']}"


async def test_a_deliver_message_for_a_dead_notification_says_notification_dead(
    start_worker: StartWorker, pool: asyncpg.Pool, provider: FakeProvider, dead_letters: DeadLetterQueues
) -> None:
    """The deliver actor's ``throws=`` path: a stray copy of a message that already died."""
    broker, sms_id = await sms_that_cannot_be_sent(start_worker, provider)
    await one_dead_letter(dead_letters)
    await wait_for_status(pool, sms_id, "dead")
    await asyncio.to_thread(dead_letters.purge)

    await publish(broker, deliver_message(sms_id, trace_id=None))  # not an operator's replay

    letter = await one_dead_letter(dead_letters)
    record = letter.record
    assert record is not None
    assert (record["type"], record["reason"], record["attempts"], record["actor"]) == (
        "notifier.delivery.NotificationDead",
        "permanent_error",
        1,
        "notifications.deliver",
    )
    assert sms_id in record["message"]
    assert letter.headers["x-error-type"] == "notifier.delivery.NotificationDead"
    assert_written_by_this_worker(record)


async def test_a_replay_that_fails_again_keeps_both_failures(
    start_worker: StartWorker, pool: asyncpg.Pool, provider: FakeProvider, dead_letters: DeadLetterQueues
) -> None:
    _broker, sms_id = await sms_that_cannot_be_sent(start_worker, provider)
    first = await one_dead_letter(dead_letters)

    assert (await asyncio.to_thread(dead_letters.replay, {first.id})).replayed == [first.id]

    async def died_again() -> list[DeadLetter]:
        return [d for d in await asyncio.to_thread(dead_letters.list) if d.replays == 1]

    [again] = await wait_until(died_again, timeout_s=30)
    assert again.id == first.id
    failures = again.failures
    assert [(f["type"], f["replays"], f["attempts"]) for f in failures] == [
        ("dramatiq.errors.Retry", 0, 3),
        ("dramatiq.errors.Retry", 1, 3),
    ]
    assert failures[0]["time"] <= failures[1]["time"]
    assert "traceback" not in failures[0]  # history entries stay short
    assert failures[1]["traceback"]
    assert (again.headers["x-error-replays"], again.headers["x-error-history"]) == (1, 1)
    await wait_for_status(pool, sms_id, "dead")
    assert await outcomes(pool, sms_id) == ["transient_error"] * 6


async def test_three_failures_for_three_reasons_are_all_kept_and_shown(
    start_worker: StartWorker,
    pool: asyncpg.Pool,
    provider: FakeProvider,
    dead_letters: DeadLetterQueues,
    rabbitmq_vhost: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's case: one message, three lives, three different errors, all three on record."""
    monkeypatch.setenv("RABBITMQ_VHOST", rabbitmq_vhost)
    broker = await start_worker()
    event = user_registered_event(contact(**SMS_USER))
    sms_id = notification_id_for(event["event_id"], "sms")
    await provider.fail("sms", status=503)
    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))
    letter = await one_dead_letter(dead_letters)

    for replays, status in ((1, 502), (2, 500)):
        await wait_for_status(pool, sms_id, "dead")  # as an operator finds it before replaying
        await provider.fail("sms", status=status)
        assert (await asyncio.to_thread(dead_letters.replay, {letter.id})).replayed == [letter.id]

        async def died_again(count: int = replays) -> list[DeadLetter]:
            return [d for d in await asyncio.to_thread(dead_letters.list) if d.replays == count]

        [letter] = await wait_until(died_again, timeout_s=30)

    failures = letter.failures
    assert [f["replays"] for f in failures] == [0, 1, 2]
    for failure, status in zip(failures, (503, 502, 500), strict=True):
        assert f"HTTP {status}" in failure["message"]
    assert (letter.headers["x-error-replays"], letter.headers["x-error-history"]) == (2, 2)
    assert "HTTP 500" in letter.headers["x-error-message"]

    assert await asyncio.to_thread(dlq.main, ["show", "--text", letter.id]) == 0
    text = capsys.readouterr().out
    for number, status in ((1, 503), (2, 502), (3, 500)):
        [line] = [row for row in text.splitlines() if row.startswith(f"failure {number}: ")]
        assert f"replays {number - 1}" in line
        assert f"HTTP {status}" in text.split(f"failure {number}: ", 1)[1].splitlines()[1]


async def test_a_replay_that_succeeds_leaves_no_dead_letter(
    start_worker: StartWorker, pool: asyncpg.Pool, provider: FakeProvider, dead_letters: DeadLetterQueues
) -> None:
    await provider.fail("sms", status=503)
    broker = await start_worker()
    event = user_registered_event(contact(**SMS_USER))
    sms_id = notification_id_for(event["event_id"], "sms")
    await publish(broker, event_message(event, FAN_OUT_NOTIFICATIONS))
    letter = await one_dead_letter(dead_letters)
    await wait_for_status(pool, sms_id, "dead")

    await provider.recover()
    assert (await asyncio.to_thread(dead_letters.replay, None)).replayed == [letter.id]

    await wait_for_status(pool, sms_id, "sent")
    await asyncio.to_thread(broker.join, "notifications", timeout=10_000)
    assert await asyncio.to_thread(dead_letters.list) == []
    assert len(provider.received("sms")) == 1


def malformed_order_created() -> dict[str, Any]:
    """An ``order.created`` event whose data has no order: the case of issue 16."""
    return {
        "event_id": "6f9b6c1e-0000-4000-8000-0000000000aa",
        "event_type": ORDER_CREATED,
        "occurred_at": "2026-11-25T19:00:00.000Z",
        "trace_id": "malformed-trace",
        "producer": "tests",
        "data": {"user": contact()},
    }


async def test_a_malformed_order_event_explains_itself_in_the_dlq_tool_and_the_management_ui(
    start_worker: StartWorker,
    dead_letters: DeadLetterQueues,
    rabbitmq_vhost: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RABBITMQ_VHOST", rabbitmq_vhost)
    broker = await start_worker()
    body = json.loads(event_message(malformed_order_created(), PROCESS_ORDER).encode())

    await publish(broker, body)
    letter = await one_dead_letter(dead_letters)
    assert letter.queue == "orders.XQ"

    # list: the type and the message in the ERROR column.
    assert await asyncio.to_thread(dlq.main, ["list"]) == 0
    listed = capsys.readouterr().out
    # (The in-process worker logs to the same stdout.)
    [row] = [line for line in listed.splitlines() if line.startswith("orders.XQ ")]
    assert body["message_id"] in row
    assert "orders.process" in row
    assert row.endswith("ValueError: the event carries no valid data.order.id")

    # show: the traceback, down to the function that refused the event.
    assert await asyncio.to_thread(dlq.main, ["show", body["message_id"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    [failure] = shown["failures"]
    assert "in _order_id" in failure["traceback"]
    assert failure["traceback"].rstrip().endswith("ValueError: the event carries no valid data.order.id")
    assert shown["args"] == body["args"]

    # The RabbitMQ UI ("Get messages"): the x-error-* headers, without decoding the body.
    [message] = get_messages(rabbitmq_vhost, "orders.XQ")
    headers = message["properties"]["headers"]
    assert headers["x-error-type"] == "ValueError"
    assert headers["x-error-message"] == "the event carries no valid data.order.id"
    assert headers["x-error-reason"] == "permanent_error"
    assert headers["x-error-actor"] == "orders.process"
    assert headers["x-error-attempts"] == 1
    assert headers["x-error-replays"] == 0
    assert headers["x-error-pid"] == os.getpid()
    assert headers["x-error-host"] == socket.gethostname()
    assert "in _order_id" in headers["x-error-traceback"]
    assert message["properties"]["message_id"] == body["message_id"]
    # Looking did not take it away.
    assert [d.id for d in await asyncio.to_thread(dead_letters.list)] == [body["message_id"]]


async def test_when_the_annotated_copy_cannot_be_published_rabbitmq_still_dead_letters_the_message(
    start_worker: StartWorker, dead_letters: DeadLetterQueues, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await start_worker()

    def broker_gone(*_: object) -> None:
        raise pika.exceptions.AMQPConnectionError("connection lost")

    monkeypatch.setattr(broker, "publish_confirmed", broker_gone)
    await publish(broker, event_message(malformed_order_created(), PROCESS_ORDER))

    letter = await one_dead_letter(dead_letters)
    # The plain reject: no record of the worker, but RabbitMQ's x-death says what happened.
    assert letter.message is not None
    assert "dead_letter" not in letter.message.options
    assert letter.error_type == "rabbitmq.rejected"
    assert letter.headers["x-death"][0]["queue"] == "orders"


def _recurse(depth: int) -> None:
    if depth == 0:
        raise RuntimeError("deep " + "x" * 300)
    _recurse(depth - 1)


def test_the_traceback_keeps_the_last_frames_and_the_error_within_the_cap() -> None:
    try:
        try:
            _recurse(200)
        except RuntimeError as cause:
            raise ValueError("wrapped " + "y" * 3000) from cause
    except ValueError as exc:
        text = bounded_traceback(exc)

    assert len(text) <= TRACEBACK_MAX_CHARS
    assert text.startswith("…(truncated)")
    assert text.rstrip().endswith("y" * 100)  # the error itself survives the cap
    # Each exception of the chain shows at most its last TRACEBACK_FRAMES frames.
    assert text.count("in _recurse") <= TRACEBACK_FRAMES


async def test_a_message_for_an_actor_that_no_longer_exists_says_so(
    start_worker: StartWorker, dead_letters: DeadLetterQueues
) -> None:
    broker = await start_worker()
    body = {
        **event_message(malformed_order_created(), PROCESS_ORDER).asdict(),
        "actor_name": "orders.retired",
    }

    await publish(broker, body)

    letter = await one_dead_letter(dead_letters)
    record = letter.record
    assert record is not None
    assert (record["reason"], record["type"], record["actor"]) == (
        "actor_not_found",
        "dramatiq.errors.ActorNotFound",
        "orders.retired",
    )
    assert letter.queue == "orders.XQ"
