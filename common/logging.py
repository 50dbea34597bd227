"""ECS-JSON structured logging, with the request's trace id bound to every line.

structlog renders through ecs-logging's formatter so Logstash/Elasticsearch get ECS fields
(``@timestamp``, ``log.level``, ``trace.id`` …). Standard-library loggers (aiohttp, asyncpg,
dramatiq) go through the same formatter, so the whole process writes one format.

Every line carries ``service.name``, from every thread: it is added by a processor (and the
stdlib formatter), not bound in contextvars, which a worker's threads would not see. The trace
id has one field, ``trace.id``: a ``trace_id=`` keyword becomes it, and stdlib lines written
inside a request or a job get it too.

No aiohttp here (workers log through this module); the request middleware that binds a
request's trace id is in ``common/web.py``.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

import ecs_logging
import structlog
from opentelemetry import trace as otel_trace

from common.logsink import BatchedHandler, BatchedLoggerFactory, writer_for

TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
# Request ids come from clients and proxies; only accept something harmless to log and echo.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


TRACE_ID = "trace.id"


def add_service_name(service: str) -> structlog.types.Processor:
    def processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service.name", service)
        return event_dict

    return processor


def one_trace_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``trace_id=`` (the event envelope's name) is logged as ECS ``trace.id``; never both."""
    value = event_dict.pop("trace_id", None)
    if value and not event_dict.get(TRACE_ID):
        event_dict[TRACE_ID] = value
    return event_dict


class EcsStdlibFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter, plus the trace id bound in this thread's context (a request, a job)."""

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        result: dict[str, Any] = super().format_to_ecs(record)
        trace_id = structlog.contextvars.get_contextvars().get(TRACE_ID)
        if trace_id:
            result.setdefault("trace", {})["id"] = trace_id
        return result


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    writer = writer_for(sys.stdout)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_service_name(service),
        one_trace_id,
        structlog.processors.format_exc_info,
    ]
    if fmt == "json":
        # The ECS formatter adds @timestamp and log.level itself.
        processors.append(ecs_logging.StructlogFormatter())  # type: ignore[arg-type]
    else:
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # Whole lines only, written in batches (common.logsink): Dramatiq's workers send their
        # output to the master through a pipe, where two halves of lines would interleave.
        logger_factory=BatchedLoggerFactory(writer),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()

    handler = BatchedHandler(writer)
    if fmt == "json":
        handler.setFormatter(EcsStdlibFormatter(extra={"service": {"name": service}}))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s [%(levelname)s] service.name={service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log duplicates what our request middleware logs with more context.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def trace_id_from_headers(headers: Mapping[str, str]) -> str:
    """The W3C trace id if a valid traceparent came in, else a sane X-Request-ID, else a new id."""
    # W3C: lower-case hex only; the gateway applies the same rule, so both pick the same id.
    traceparent = headers.get("traceparent", "").strip()
    match = TRACEPARENT_RE.match(traceparent)
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    request_id = headers.get("X-Request-ID", "").strip()
    if REQUEST_ID_RE.match(request_id):
        return request_id
    # No id came in: the trace the server span started (common.http_tracing), so logs name it.
    span_context = otel_trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return format(span_context.trace_id, "032x")
    return uuid.uuid4().hex


def bind_trace_id(trace_id: object) -> None:
    """Bind ``trace.id`` for the rest of this task (a worker's job): its log lines carry it."""
    if isinstance(trace_id, str) and trace_id:
        structlog.contextvars.bind_contextvars(**{TRACE_ID: trace_id})


def current_trace_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get(TRACE_ID)
    return str(value) if value else None
