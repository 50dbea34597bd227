"""Why a message died: the record a worker writes into every dead letter, and its history.

RabbitMQ's own dead-lettering (``basic.nack`` with ``requeue=False``) moves a message unchanged,
so the reason would live only in the worker's log. Instead the worker publishes an annotated copy
to ``Q.XQ`` (``workers.rabbitmq.AnnotatingConsumer``) with this record twice:

- in the Dramatiq message options, ``dead_letter`` (what ``python -m workers.dlq list/show``
  print) and ``dead_letter_history`` (the failures before earlier replays, oldest first);
- as AMQP headers (``x-error-type``, ``x-error-message``, …), which the RabbitMQ management
  UI shows under *Get messages* without decoding the body.

A record: ``type`` (``module.Class``, builtins bare), ``message``, ``traceback`` (the last
frames, size-capped), ``reason``, ``time`` (UTC ISO 8601), ``host``, ``pid``, ``actor``,
``queue``, ``attempts`` (runs of the actor in this life of the message) and ``replays``.
"""

from __future__ import annotations

import os
import socket
import traceback
from datetime import UTC, datetime
from typing import Any

from dramatiq import Broker, MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import SkipMessage

# Set by ``python -m workers.dlq replay``: how often an operator has replayed this message.
REPLAYS_OPTION = "dlq_replays"
DEAD_LETTER_OPTION = "dead_letter"
HISTORY_OPTION = "dead_letter_history"
HISTORY_LIMIT = 5
TRACEBACK_FRAMES = 8
TRACEBACK_MAX_CHARS = 4000
MESSAGE_MAX_CHARS = 500
HEADER_PREFIX = "x-error-"

REASON_RETRIES_EXHAUSTED = "retries_exhausted"
REASON_PERMANENT = "permanent_error"  # the actor's ``throws=``
REASON_SKIPPED = "skipped"  # a middleware failed it before it ran (e.g. AgeLimit)
REASON_NO_ACTOR = "actor_not_found"
REASON_FAILED = "failed"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def type_name(exception: BaseException) -> str:
    cls = type(exception)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def bounded_traceback(exception: BaseException) -> str:
    """The last frames of each exception in the chain; the end (the error itself) survives the cap."""
    text = "".join(traceback.format_exception(exception, limit=-TRACEBACK_FRAMES))
    if len(text) <= TRACEBACK_MAX_CHARS:
        return text
    return "…(truncated)\n" + text[-(TRACEBACK_MAX_CHARS - 14) :]


def _reason(broker: Broker, message: MessageProxy, exception: BaseException | None) -> str:
    if exception is None:
        return REASON_FAILED
    if isinstance(exception, ActorNotFound):
        return REASON_NO_ACTOR
    if isinstance(exception, SkipMessage):
        return REASON_SKIPPED
    throws = message.options.get("throws")
    if not throws and message.actor_name in broker.actors:
        throws = broker.get_actor(message.actor_name).options.get("throws")
    if throws and isinstance(exception, throws):
        return REASON_PERMANENT
    return REASON_RETRIES_EXHAUSTED


def failure_record(broker: Broker, message: MessageProxy, queue_name: str) -> dict[str, Any]:
    """What is known about the failure of ``message`` as the worker rejects it."""
    exception: BaseException | None = message._exception
    reason = _reason(broker, message, exception)
    retries = int(message.options.get("retries", 0))
    # Retries counts every failed run it saw; a permanent error ends the run before it counts.
    attempts = retries + 1 if reason == REASON_PERMANENT else max(retries, 1)
    return {
        "type": type_name(exception) if exception is not None else "",
        "message": str(exception)[:MESSAGE_MAX_CHARS] if exception is not None else "",
        "traceback": bounded_traceback(exception) if exception is not None else "",
        "reason": reason,
        "time": utc_now_iso(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "actor": message.actor_name,
        "queue": queue_name,
        "attempts": attempts,
        "replays": int(message.options.get(REPLAYS_OPTION, 0)),
    }


def dead_letter_options(options: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The options of the dead letter: the record, without Retries' own unbounded traceback."""
    kept = {key: value for key, value in options.items() if key != "traceback"}
    kept[DEAD_LETTER_OPTION] = record
    return kept


def error_headers(record: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    headers: dict[str, Any] = {
        f"{HEADER_PREFIX}{key}": value for key, value in record.items() if value not in ("", None)
    }
    headers[f"{HEADER_PREFIX}history"] = len(history)
    return headers


def failures_of(options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every recorded failure of a message, oldest first (its history, then the last one)."""
    failures = [entry for entry in options.get(HISTORY_OPTION) or [] if isinstance(entry, dict)]
    last = options.get(DEAD_LETTER_OPTION)
    return [*failures, last] if isinstance(last, dict) else failures


def with_history(options: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """Options for a replay: the last failure joins the history (without its traceback)."""
    history = [entry for entry in options.get(HISTORY_OPTION) or [] if isinstance(entry, dict)]
    if record:
        history.append({key: value for key, value in record.items() if key != "traceback"})
    kept = {key: value for key, value in options.items() if key != DEAD_LETTER_OPTION}
    if history:
        kept[HISTORY_OPTION] = history[-HISTORY_LIMIT:]
    return kept
