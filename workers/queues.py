"""The worker queues on RabbitMQ: ``python -m workers.queues status | migrate [--queue Q]``.

Every ``Q`` (``orders``, ``notifications``) comes with ``Q.DQ`` (delayed retries) and ``Q.XQ``
(dead letters), declared with ``common.amqp.queue_family``'s arguments: quorum queues with a
delivery limit. A broker that ran an older version holds them as classic queues, and a queue's
type (or any argument) cannot change in place: RabbitMQ refuses the new declaration with
``PRECONDITION_FAILED``, so the workers, the outbox relays and the notifier API cannot start
publishing or consuming until the queues are migrated.

``migrate`` moves each queue whose arguments differ, one at a time and without losing a message:

1. declare ``<name>.migrating`` (a durable classic queue) and move every message there;
2. delete the old queue, only if it is empty and unused (else move again: someone published).
   RabbitMQ checks that atomically for the classic queues of earlier versions; any other
   outdated queue (a quorum queue with another delivery limit, say) is checked just before the
   delete, so stop its publishers too in that case;
3. declare the queue with the new arguments;
4. move the messages back, in their order, and delete ``<name>.migrating``.

Each move publishes a copy (body and properties, headers such as ``x-death`` included), waits for
RabbitMQ's confirm, and only then acks the original: a crash leaves a duplicate at worst (every
actor is idempotent), and running ``migrate`` again finishes the job. Stop the workers first (a
queue with consumers is refused); publishers may keep running, their messages either land in
the old queue before the move or fail over the short gap and are retried (outbox, notifier API).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import xq_name
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from common.amqp import queue_family
from common.errors import ServiceError
from common.events import QUEUE_NAMES
from common.settings import RabbitSettings, SettingsError, load_settings

WORKER_QUEUES = QUEUE_NAMES
TEMPORARY_SUFFIX = ".migrating"
# Classic, durable: quorum queues cannot be deleted "only if empty", which the last step needs.
TEMPORARY_ARGUMENTS: dict[str, object] = {"x-queue-type": "classic"}
DELETE_ATTEMPTS = 5
# Set by a quorum queue on each delivery; a moved message starts counting afresh.
DROPPED_HEADERS = ("x-delivery-count",)


class MigrationError(ServiceError):
    """A queue cannot be migrated now; the message says what to do."""


@dataclass(frozen=True)
class QueueState:
    name: str
    exists: bool
    messages: int = 0
    consumers: int = 0
    current: bool = False  # declared with today's arguments
    problem: str = ""  # RabbitMQ's answer when it is not
    leftover: int = -1  # messages in <name>.migrating; -1: no such queue

    def describe(self) -> str:
        if not self.exists:
            state = "missing (declared by the first worker or publisher)"
        elif self.current:
            state = "ok"
        else:
            state = f"NEEDS MIGRATION: {self.problem}"
        extra = "" if self.leftover < 0 else f"; {self.leftover} message(s) in {self.name}{TEMPORARY_SUFFIX}"
        return f"{self.name:<22} {self.messages:>8} {self.consumers:>9}  {state}{extra}"


def _count(connection: BlockingConnection, name: str) -> tuple[int, int] | None:
    """(messages, consumers), or None when the queue does not exist."""
    channel = connection.channel()
    try:
        method = channel.queue_declare(name, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    channel.close()
    return method.message_count, method.consumer_count


def _declare(connection: BlockingConnection, name: str, arguments: dict[str, object]) -> str:
    """Declare on a channel of its own (a refusal closes it); RabbitMQ's refusal, or ''."""
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406:
            return str(exc.reply_text)
        raise
    channel.close()
    return ""


def inspect(connection: BlockingConnection, name: str, arguments: dict[str, object]) -> QueueState:
    temporary = _count(connection, name + TEMPORARY_SUFFIX)
    leftover = -1 if temporary is None else temporary[0]
    counts = _count(connection, name)
    if counts is None:
        return QueueState(name, exists=False, leftover=leftover)
    # The queue exists, so this declaration creates nothing: it only compares the arguments.
    problem = _declare(connection, name, arguments)
    return QueueState(name, True, *counts, current=not problem, problem=problem, leftover=leftover)


def move_all(channel: BlockingChannel, source: str, target: str) -> int:
    """Move every message from source to target, each confirmed before its original is acked."""
    moved = 0
    while True:
        method, properties, body = channel.basic_get(source, auto_ack=False)
        if method is None:
            return moved
        headers = {k: v for k, v in (properties.headers or {}).items() if k not in DROPPED_HEADERS}
        properties.headers = headers or None
        try:
            channel.basic_publish("", target, body, properties, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise MigrationError(f"RabbitMQ did not take a message for {target!r}: {exc}") from exc
        channel.basic_ack(method.delivery_tag)
        moved += 1


@contextmanager
def _confirm_channel(connection: BlockingConnection) -> Iterator[BlockingChannel]:
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        yield channel
    finally:
        if channel.is_open:
            channel.close()  # anything taken and not acked goes back to its queue


def legacy_arguments(name: str) -> dict[str, object]:
    """What Dramatiq's stock broker (every earlier version) declared: classic queues."""
    if name.endswith(".XQ"):
        return {"x-message-ttl": DEAD_MESSAGE_TTL}
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(name)}


def _is_legacy(connection: BlockingConnection, name: str) -> bool:
    # RabbitMQ names only the first argument that differs, so ask the other way round.
    return not _declare(connection, name, legacy_arguments(name))


def _delete_if_idle(
    connection: BlockingConnection, channel: BlockingChannel, name: str, *, classic: bool
) -> bool:
    if classic:
        try:
            channel.queue_delete(name, if_unused=True, if_empty=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            return False
        return True
    # Quorum queues refuse if-empty/if-unused (NOT_IMPLEMENTED closes the connection).
    if _count(connection, name) != (0, 0):
        return False
    channel.queue_delete(name)
    return True


def migrate_queue(connection: BlockingConnection, name: str, arguments: dict[str, object]) -> str:
    """Bring one queue to ``arguments``; a line saying what was done."""
    state = inspect(connection, name, arguments)
    temporary = name + TEMPORARY_SUFFIX
    outdated = state.exists and not state.current
    if outdated:
        if state.consumers:
            raise MigrationError(f"{name} has {state.consumers} consumer(s): stop the workers first")
        if state.leftover < 0 and _declare(connection, temporary, TEMPORARY_ARGUMENTS):
            raise MigrationError(f"cannot declare {temporary}")
        for _ in range(DELETE_ATTEMPTS):
            with _confirm_channel(connection) as channel:
                move_all(channel, name, temporary)
                if not _delete_if_idle(connection, channel, name, classic=_is_legacy(connection, name)):
                    continue  # a message arrived or a consumer attached meanwhile: look again
            problem = _declare(connection, name, arguments)
            if not problem:
                break
            # Something (a process of the older version) declared it the old way again.
            state = inspect(connection, name, arguments)
        else:
            raise MigrationError(
                f"{name} keeps coming back with other arguments or in use: stop every process of "
                "the older version (workers, APIs' outbox relays), then run migrate again"
            )
    elif not state.exists:
        problem = _declare(connection, name, arguments)
        if problem:
            raise MigrationError(f"cannot declare {name}: {problem}")
    if state.leftover < 0 and not outdated:
        return f"{name}: {'already current' if state.exists else 'declared'}"
    with _confirm_channel(connection) as channel:
        restored = move_all(channel, temporary, name)
        channel.queue_delete(temporary, if_empty=True)
    return f"{name}: migrated, {restored} message(s) kept"


def queue_arguments(queues: Sequence[str]) -> dict[str, dict[str, object]]:
    """Each named work queue's family (``Q``, ``Q.DQ``, ``Q.XQ``) with its arguments."""
    wanted: dict[str, dict[str, object]] = {}
    for queue in queues:
        wanted.update({name: dict(arguments) for name, arguments in queue_family(queue).items()})
    return wanted


def status(amqp_url: str, queues: Sequence[str] = WORKER_QUEUES) -> list[QueueState]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return [inspect(connection, name, args) for name, args in queue_arguments(queues).items()]
    finally:
        connection.close()


def migrate(amqp_url: str, queues: Sequence[str] = WORKER_QUEUES) -> list[str]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return [migrate_queue(connection, name, args) for name, args in queue_arguments(queues).items()]
    finally:
        if connection.is_open:
            connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.queues",
        description="Check the worker queues' type and arguments, and migrate classic queues to quorum.",
    )
    # --queue after the command, as in `migrate --queue orders`.
    queue_option = argparse.ArgumentParser(add_help=False)
    queue_option.add_argument(
        "--queue", action="append", choices=WORKER_QUEUES, help="a work queue (default: all of them)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "status",
        parents=[queue_option],
        help="each queue: messages, consumers, and whether it needs migrating",
    )
    commands.add_parser(
        "migrate",
        parents=[queue_option],
        help="move classic (or otherwise outdated) queues to the current arguments",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(RabbitSettings)
    except SettingsError as exc:
        print(f"workers.queues: {exc}", file=sys.stderr)
        return 2
    queues = args.queue or WORKER_QUEUES
    try:
        if args.command == "status":
            states = status(settings.amqp_url, queues)
            print(f"{'QUEUE':<22} {'MESSAGES':>8} {'CONSUMERS':>9}  STATE")
            for state in states:
                print(state.describe())
            outdated = any((s.exists and not s.current) or s.leftover >= 0 for s in states)
            return 1 if outdated else 0
        for line in migrate(settings.amqp_url, queues):
            print(line)
    except MigrationError as exc:
        print(f"workers.queues: {exc}", file=sys.stderr)
        return 1
    except pika.exceptions.AMQPConnectionError as exc:
        print(f"workers.queues: cannot reach RabbitMQ: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
