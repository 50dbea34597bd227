"""Dead letters and their queues: reading ``<queue>.XQ``, choosing, replaying, purging.

A message whose retries ran out, or whose actor threw an exception listed in ``throws``, is
published by the worker to ``<queue>.XQ`` with the reason it died (``workers.deadletters``); one
that RabbitMQ moved there itself (a poison message past the queue's delivery limit, a reject
without a reason) is explained from its ``x-death`` header. The queues are read with
``basic_get`` and manual acks: browsing takes messages without acking and closes the channel,
which puts them back.

A replay republishes the message to its original queue (declared first, as the workers declare
it) with the retry count reset (otherwise Retries would dead-letter it again at once), its last
failure moved into the message's history, and acks it in the XQ only after RabbitMQ confirmed
the republish — a crash in between leaves a duplicate, never a loss; every actor is idempotent.
A replay also counts itself in the ``dlq_replays`` option: past ``max_replays`` a message is
refused and stays in the XQ, so a message that keeps failing cannot go round in circles. A
replay run only handles the messages present when it started, for the same reason.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from dramatiq import Message
from dramatiq.common import q_name
from dramatiq.errors import DecodeError
from pika.adapters.blocking_connection import BlockingChannel

from common.amqp import MIGRATE_HINT, queue_family
from common.events import DEAD_LETTER_QUEUES
from workers.deadletters import DEAD_LETTER_OPTION, REPLAYS_OPTION, failures_of, with_history

DEFAULT_MAX_REPLAYS = 3
# Retries' bookkeeping of the failed run; a replay starts a fresh one.
RESET_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")
X_DEATH_REASONS = {
    "delivery_limit": "redelivered past the queue's x-delivery-limit: its consumer kept dying "
    "or disconnecting while holding it (a poison message?)",
    "rejected": "rejected without a recorded reason (see the worker log of that time)",
    "expired": "expired in its queue (x-message-ttl)",
    "maxlen": "dropped by the queue's length limit",
}


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    delivery_tag: int
    body: bytes
    message: Message[Any] | None  # None: not a Dramatiq message (shown, never replayed)
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.message.message_id if self.message else f"undecodable-{self.delivery_tag}"

    @property
    def actor(self) -> str:
        return self.message.actor_name if self.message else "?"

    @property
    def replays(self) -> int:
        return int(self.message.options.get(REPLAYS_OPTION, 0)) if self.message else 0

    @property
    def record(self) -> dict[str, Any] | None:
        """Why it died: the worker's record, else what RabbitMQ's ``x-death`` says."""
        if self.message is not None and isinstance(self.message.options.get(DEAD_LETTER_OPTION), dict):
            return dict(self.message.options[DEAD_LETTER_OPTION])
        deaths = self.headers.get("x-death")
        if not deaths or not isinstance(deaths[0], dict):
            return None
        death = deaths[0]  # the most recent first
        reason = str(death.get("reason", "unknown"))
        died = parse_time(death.get("time"))
        return {
            "type": f"rabbitmq.{reason}",
            "message": X_DEATH_REASONS.get(reason, f"dead-lettered by RabbitMQ ({reason})"),
            "reason": reason,
            "time": died.isoformat() if died else "",
            "queue": str(death.get("queue", "")),
            "actor": self.actor,
            "replays": self.replays,
        }

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Every recorded failure, oldest first: the history of earlier replays, then the last."""
        options = self.message.options if self.message else {}
        if isinstance(options.get(DEAD_LETTER_OPTION), dict):
            return failures_of(options)
        record = self.record  # RabbitMQ's x-death, after the history of earlier replays
        return [*failures_of(options), record] if record else failures_of(options)

    @property
    def error_type(self) -> str:
        record = self.record
        return str(record.get("type", "")) if record else ""

    @property
    def error(self) -> str:
        record = self.record
        if record and record.get("type"):
            return f"{record['type']}: {record.get('message', '')}".rstrip(": ")
        # A dead letter of an older worker: the last line of Retries' traceback.
        traceback = str(self.message.options.get("traceback", "")) if self.message else ""
        lines = [line for line in traceback.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    @property
    def died_at(self) -> datetime | None:
        record = self.record
        return parse_time(record.get("time")) if record else None

    @property
    def attempts(self) -> int:
        record = self.record
        if record and record.get("attempts") is not None:
            return int(record["attempts"])
        return int(self.message.options.get("retries", 0)) if self.message else 0

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"dead_letter_queue": self.queue}
        if self.message is None:
            shown.update(id=self.id, body=self.body.decode(errors="replace"))
        else:
            shown.update(self.message.asdict())
        shown["failures"] = self.failures
        shown["amqp_headers"] = self.headers
        return shown


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command applies to; every given criterion must hold."""

    ids: frozenset[str] | None = None  # None: any id
    actor: str | None = None  # a glob: notifications.*
    error_type: str | None = None  # full (notifier.fanout.InvalidEvent) or short (InvalidEvent)
    since: datetime | None = None

    @classmethod
    def of(cls, selection: Selection | Iterable[str] | None) -> Selection:
        if selection is None or isinstance(selection, Selection):
            return selection or cls()
        return cls(ids=frozenset(selection))

    def matches(self, letter: DeadLetter) -> bool:
        if self.ids is not None and letter.id not in self.ids:
            return False
        if self.actor is not None and not fnmatch.fnmatchcase(letter.actor, self.actor):
            return False
        if self.error_type is not None and self.error_type not in (
            letter.error_type,
            letter.error_type.rsplit(".", 1)[-1],
        ):
            return False
        if self.since is not None:
            died = letter.died_at
            return died is not None and died >= self.since
        return True


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False


def replay_message(letter_or_message: DeadLetter | Message[Any]) -> Message[Any]:
    """The message a replay publishes: retries reset, the last failure moved into its history."""
    if isinstance(letter_or_message, DeadLetter):
        assert letter_or_message.message is not None
        message, record = letter_or_message.message, letter_or_message.record
    else:
        message, record = letter_or_message, letter_or_message.options.get(DEAD_LETTER_OPTION)
    options = {k: v for k, v in message.options.items() if k not in RESET_OPTIONS}
    options = with_history(options, record)
    options[REPLAYS_OPTION] = int(message.options.get(REPLAYS_OPTION, 0)) + 1
    return dataclasses.replace(message, queue_name=q_name(message.queue_name), options=options)


class DeadLetterQueues:
    def __init__(self, amqp_url: str, queues: Sequence[str] = DEAD_LETTER_QUEUES) -> None:
        self._parameters = pika.URLParameters(amqp_url)
        self.queues = tuple(queues)

    @contextmanager
    def _channel(self) -> Iterator[BlockingChannel]:
        connection = pika.BlockingConnection(self._parameters)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            yield channel
        finally:
            # Closing returns every message taken and not acked to its queue, in order.
            if connection.is_open:
                connection.close()

    @staticmethod
    def _take_all(channel: BlockingChannel, queue: str) -> list[DeadLetter]:
        try:
            count = channel.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return []  # no actor has declared it yet: nothing ever died there
            raise
        letters = []
        # At most the count seen now: what dies again while we work waits for the next run.
        for _ in range(count):
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            try:
                message: Message[Any] | None = Message.decode(body)
            except DecodeError:
                message = None
            headers = dict(properties.headers or {})
            letters.append(DeadLetter(queue, method.delivery_tag, body, message, headers))
        return letters

    def list(self, selection: Selection | None = None) -> list[DeadLetter]:
        chosen = Selection.of(selection)
        found = []
        for queue in self.queues:
            with self._channel() as channel:
                found += [letter for letter in self._take_all(channel, queue) if chosen.matches(letter)]
        return found

    def find(self, message_id: str) -> DeadLetter | None:
        return next(iter(self.list(Selection(ids=frozenset({message_id})))), None)

    def replay(
        self,
        selection: Selection | Iterable[str] | None,
        *,
        max_replays: int = DEFAULT_MAX_REPLAYS,
        dry_run: bool = False,
    ) -> ReplayReport:
        """Replay the selected messages (None: all of them); unknown ids are simply not found."""
        chosen = Selection.of(selection)
        report = ReplayReport(dry_run=dry_run)
        for queue in self.queues:
            with self._channel() as channel:
                target_problems: dict[str, str | None] = {}
                for letter in self._take_all(channel, queue):
                    if not chosen.matches(letter):
                        continue
                    problem = self._refusal(letter, max_replays)
                    # A dry run declares nothing, so it cannot tell an unmigrated target queue.
                    if problem is None and letter.message is not None and not dry_run:
                        target = q_name(letter.message.queue_name)
                        if target not in target_problems:
                            target_problems[target] = self._declare_target(channel, target)
                        problem = target_problems[target]
                    if problem is None and not dry_run:
                        problem = self._republish(channel, letter)
                        if problem is None:
                            channel.basic_ack(letter.delivery_tag)
                    if problem is None:
                        report.replayed.append(letter.id)
                    else:
                        report.refused.append((letter.id, problem))
        return report

    @staticmethod
    def _refusal(letter: DeadLetter, max_replays: int) -> str | None:
        if letter.message is None:
            return "not a Dramatiq message; inspect it with show"
        if letter.replays >= max_replays:
            return (
                f"already replayed {letter.replays} time(s) (limit {max_replays}); "
                "fix the cause, then purge it or raise --max-replays"
            )
        return None

    @staticmethod
    def _declare_target(channel: BlockingChannel, queue_name: str) -> str | None:
        """Declare the original queue as the workers do; a refusal closes only this side channel."""
        side = channel.connection.channel()
        try:
            for name, arguments in queue_family(queue_name).items():
                side.queue_declare(name, durable=True, arguments=dict(arguments))
        except pika.exceptions.ChannelClosedByBroker as exc:
            return f"cannot declare {queue_name!r}: {exc.reply_text} ({MIGRATE_HINT})"
        side.close()
        return None

    @staticmethod
    def _republish(channel: BlockingChannel, letter: DeadLetter) -> str | None:
        replayed = replay_message(letter)
        try:
            channel.basic_publish(
                exchange="",
                routing_key=replayed.queue_name,
                body=replayed.encode(),
                properties=pika.BasicProperties(delivery_mode=2, message_id=replayed.message_id),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            return f"queue {replayed.queue_name!r} does not exist; start the workers first"
        except pika.exceptions.NackError:
            return "RabbitMQ refused the republish; try again"
        return None

    def purge(self) -> dict[str, int]:
        purged = {}
        for queue in self.queues:
            with self._channel() as channel:
                try:
                    purged[queue] = channel.queue_purge(queue).method.message_count
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:
                        raise
                    purged[queue] = 0
        return purged
