"""The workers' side of tracing: a consumer span per message, in the trace its options carry.

The outbox relay (and the fan-out) put ``traceparent``/``tracestate`` into a message's options
(``common.tracing``). ``before_process_message`` starts the consumer span on the worker thread
and makes it current there; Dramatiq's AsyncIO middleware runs an async actor as a task created
from that thread, and a task starts with a copy of its creator's context, so the actor's own
spans, events and messages continue the same trace. A message sent with ``Actor.send`` in a
thread that has a current span gets its context too (``before_enqueue``).

Each worker process sets up its TracerProvider in ``after_process_boot`` (only the dramatiq
command line emits it; a test that runs a Worker in-process installs its own provider) and
exports what is left at ``after_worker_shutdown``.
"""

from __future__ import annotations

import threading
from typing import Any

from dramatiq import Broker, Middleware, Worker
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from common.tracing import extract, setup_tracing, shutdown_tracing, tracer, w3c_context
from workers.settings import WorkerSettings


class WorkerTracing(Middleware):
    """Put it first in the broker's list: its ``after_*`` hooks then run last, inside the span."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._provider: TracerProvider | None = None
        # Before and after hooks of one message run on the same worker thread.
        self._local = threading.local()

    def after_process_boot(self, broker: Broker) -> None:
        self._provider = setup_tracing("workers", self.settings)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # After the worker threads finished the messages in hand, so their spans go out too.
        shutdown_tracing(self._provider)
        self._provider = None

    def before_enqueue(self, broker: Broker, message: Any, delay: int) -> None:
        # A retry or a replay keeps the context it was first sent with.
        if "traceparent" not in message.options:
            message.options.update(w3c_context())

    def before_process_message(self, broker: Broker, message: Any) -> None:
        span = tracer().start_span(
            f"process {message.actor_name}",
            context=extract(message.options),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.queue_name,
                "messaging.message.id": message.message_id,
                "messaging.dramatiq.actor": message.actor_name,
                "messaging.dramatiq.retries": int(message.options.get("retries", 0)),
            },
        )
        token = otel_context.attach(set_span_in_context(span))
        self._local.current = (span, token)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._end(exception)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self._end(None)

    def _end(self, exception: BaseException | None) -> None:
        current: tuple[Span, object] | None = getattr(self._local, "current", None)
        if current is None:
            return  # an earlier middleware skipped the message before this one saw it
        self._local.current = None
        span, token = current
        if exception is not None:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]
