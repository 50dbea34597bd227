"""Dead-letter tooling: ``python -m workers.dlq list | show ID | replay ID... | replay --all | purge --yes``.

Dramatiq moves a message whose retries ran out (or whose actor threw an exception listed in
``throws``) to ``<queue>.XQ``. This tool reads those queues with ``basic_get`` and manual acks:
browsing takes messages without acking and closes the channel, which puts them back.

A replay republishes the message to its original queue with the retry count reset (otherwise
Retries would dead-letter it again at once) and acks it in the XQ only after RabbitMQ confirmed
the republish — a crash in between leaves a duplicate, never a loss; every actor is idempotent.
A replay also counts itself in the ``dlq_replays`` option: past ``--max-replays`` a message is
refused and stays in the XQ, so a message that keeps failing cannot go round in circles. A
replay run only handles the messages present when it started, for the same reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from dramatiq import Message
from dramatiq.common import q_name
from dramatiq.errors import DecodeError
from pika.adapters.blocking_connection import BlockingChannel

from common.settings import RabbitSettings, SettingsError, load_settings
from workers.broker import REPLAYS_OPTION

DEAD_LETTER_QUEUES = ("notifications.XQ", "orders.XQ")
DEFAULT_MAX_REPLAYS = 3
# Retries' bookkeeping of the failed run; a replay starts a fresh one.
RESET_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    delivery_tag: int
    body: bytes
    message: Message[Any] | None  # None: not a Dramatiq message (shown, never replayed)

    @property
    def id(self) -> str:
        return self.message.message_id if self.message else f"undecodable-{self.delivery_tag}"

    @property
    def replays(self) -> int:
        return int(self.message.options.get(REPLAYS_OPTION, 0)) if self.message else 0

    @property
    def error(self) -> str:
        traceback = str(self.message.options.get("traceback", "")) if self.message else ""
        lines = [line for line in traceback.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def as_dict(self) -> dict[str, Any]:
        if self.message is None:
            return {
                "dead_letter_queue": self.queue,
                "id": self.id,
                "body": self.body.decode(errors="replace"),
            }
        return {"dead_letter_queue": self.queue, **self.message.asdict()}


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def replay_message(message: Message[Any]) -> Message[Any]:
    options = {k: v for k, v in message.options.items() if k not in RESET_OPTIONS}
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
            method, _properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            try:
                message: Message[Any] | None = Message.decode(body)
            except DecodeError:
                message = None
            letters.append(DeadLetter(queue, method.delivery_tag, body, message))
        return letters

    def list(self) -> list[DeadLetter]:
        found = []
        for queue in self.queues:
            with self._channel() as channel:
                found += self._take_all(channel, queue)
        return found

    def find(self, message_id: str) -> DeadLetter | None:
        return next((letter for letter in self.list() if letter.id == message_id), None)

    def replay(self, message_ids: set[str] | None, *, max_replays: int = DEFAULT_MAX_REPLAYS) -> ReplayReport:
        """Replay the given messages (None: all of them); unknown ids are simply not found."""
        report = ReplayReport()
        for queue in self.queues:
            with self._channel() as channel:
                for letter in self._take_all(channel, queue):
                    if message_ids is not None and letter.id not in message_ids:
                        continue
                    if letter.message is None:
                        report.refused.append((letter.id, "not a Dramatiq message; inspect it with show"))
                    elif letter.replays >= max_replays:
                        report.refused.append(
                            (
                                letter.id,
                                f"already replayed {letter.replays} time(s) (limit {max_replays}); "
                                "fix the cause, then purge it or raise --max-replays",
                            )
                        )
                    else:
                        problem = self._republish(channel, letter.message)
                        if problem:
                            report.refused.append((letter.id, problem))
                        else:
                            channel.basic_ack(letter.delivery_tag)
                            report.replayed.append(letter.id)
        return report

    @staticmethod
    def _republish(channel: BlockingChannel, message: Message[Any]) -> str | None:
        replayed = replay_message(message)
        try:
            channel.basic_publish(
                exchange="",
                routing_key=replayed.queue_name,
                body=replayed.encode(),
                properties=pika.BasicProperties(delivery_mode=2),
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


def _print_list(letters: list[DeadLetter]) -> None:
    if not letters:
        print("no dead letters")
        return
    print(f"{'QUEUE':<18} {'MESSAGE ID':<36}  {'ACTOR':<22} {'RETRIES':>7} {'REPLAYS':>7}  ERROR")
    for letter in letters:
        actor = letter.message.actor_name if letter.message else "?"
        retries = letter.message.options.get("retries", 0) if letter.message else 0
        counts = f"{retries:>7} {letter.replays:>7}"
        print(f"{letter.queue:<18} {letter.id:<36}  {actor:<22} {counts}  {letter.error[:120]}")
    print(f"{len(letters)} dead letter(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.dlq", description="Inspect and replay dead letters."
    )
    parser.add_argument(
        "--queue", action="append", help=f"dead-letter queue (default: {', '.join(DEAD_LETTER_QUEUES)})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list dead letters (they stay in the queue)")
    show = commands.add_parser("show", help="print one dead letter as JSON, traceback included")
    show.add_argument("message_id")
    replay = commands.add_parser("replay", help="republish to the original queue with retries reset")
    replay.add_argument("message_ids", nargs="*")
    replay.add_argument("--all", action="store_true", help="every dead letter present now")
    replay.add_argument("--max-replays", type=int, default=DEFAULT_MAX_REPLAYS)
    purge = commands.add_parser("purge", help="delete every dead letter")
    purge.add_argument("--yes", action="store_true", help="really delete them")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(RabbitSettings)
    except SettingsError as exc:
        print(f"workers.dlq: {exc}", file=sys.stderr)
        return 2
    queues = DeadLetterQueues(settings.amqp_url, args.queue or DEAD_LETTER_QUEUES)

    if args.command == "list":
        _print_list(queues.list())
        return 0
    if args.command == "show":
        letter = queues.find(args.message_id)
        if letter is None:
            print(f"no dead letter {args.message_id}", file=sys.stderr)
            return 1
        print(json.dumps(letter.as_dict(), indent=2, default=str))
        return 0
    if args.command == "replay":
        if args.all == bool(args.message_ids):
            parser.error("replay takes message ids or --all, not both or neither")
        wanted = None if args.all else set(args.message_ids)
        report = queues.replay(wanted, max_replays=args.max_replays)
        for message_id in report.replayed:
            print(f"replayed {message_id}")
        for message_id, reason in report.refused:
            print(f"refused  {message_id}: {reason}", file=sys.stderr)
        missing = (wanted or set()) - set(report.replayed) - {i for i, _ in report.refused}
        for message_id in sorted(missing):
            print(f"missing  {message_id}: not in {', '.join(queues.queues)}", file=sys.stderr)
        return 1 if report.refused or missing else 0
    if not args.yes:
        print("purge deletes every dead letter for good; add --yes to do it", file=sys.stderr)
        return 2
    for queue, count in queues.purge().items():
        print(f"purged {count} message(s) from {queue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
