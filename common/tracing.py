"""Distributed tracing with OpenTelemetry: one W3C trace from the gateway to the email.

Each process sets up one TracerProvider (``setup_tracing``: the APIs in ``tracing_ctx``, their
first cleanup context; the workers in ``workers.tracing``). The context travels as W3C
``traceparent``/``tracestate``:

- HTTP: ``tracing_middleware`` continues the caller's trace (the gateway passes or starts one) in a
  server span; ``client_trace_configs`` makes an aiohttp session's calls client spans that send it on.
- Events: ``common.events.new_event`` writes the current context into the envelope, beside
  ``trace_id``; the outbox relay publishes each message in a producer span (``producer_span``)
  whose context goes into the Dramatiq message's options; the workers continue from there.

The settings are OpenTelemetry's own names (``OTEL_TRACES_EXPORTER`` …, ``common.settings``).
With the exporter ``none`` spans are never recorded (the sampler says no), so tracing costs an id
per span; trace ids are still made and propagated, so logs, events and emails carry them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from common.settings import BaseServiceSettings
from common.types import CleanupCtx, Handler

# The W3C Trace Context fields, in HTTP headers, event envelopes and message options alike.
W3C_FIELDS = ("traceparent", "tracestate")
# Probes and scrapes every few seconds: spans of them would bury the requests worth reading.
UNTRACED_PATHS = frozenset({"/health", "/health/ready", "/metrics"})

tracer = trace.get_tracer("microservices-app")


def sampler_for(settings: BaseServiceSettings) -> Sampler:
    if settings.otel_traces_exporter == "none":
        return ALWAYS_OFF
    # A trace started upstream keeps the caller's decision, so a trace is whole or absent.
    return ParentBased(TraceIdRatioBased(settings.otel_traces_sampler_arg))


def exporter_for(settings: BaseServiceSettings) -> SpanExporter | None:
    if settings.otel_traces_exporter == "otlp":
        # Imported only when used: protobuf and requests are most of tracing's import time.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces")
    if settings.otel_traces_exporter == "console":
        # stderr: stdout is the ECS log stream that Logstash parses line by line.
        return ConsoleSpanExporter(out=sys.stderr)
    return None


def setup_tracing(
    service: str, settings: BaseServiceSettings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install this process's TracerProvider; the provider to shut down, or None if one was there.

    OpenTelemetry allows one global provider per process. A second service in the same process
    (tests) uses the one already installed, e.g. a test's in-memory exporter.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    provider = TracerProvider(
        sampler=sampler_for(settings),
        resource=Resource.create({"service.name": service, "deployment.environment.name": settings.app_env}),
    )
    exporter = exporter or exporter_for(settings)
    if exporter is not None:
        # Batched on the SDK's own thread: a request or a message never waits for the collector.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing(provider: TracerProvider | None) -> None:
    if provider is not None:
        provider.shutdown()  # exports what is still batched


def tracing_ctx(service: str, settings: BaseServiceSettings) -> CleanupCtx:
    """The API's TracerProvider for the app's lifetime; add it first, so it ends last."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        provider = setup_tracing(service, settings)
        yield
        # The last export is a blocking HTTP call (bounded by the exporter's timeout).
        await asyncio.to_thread(shutdown_tracing, provider)

    return ctx


def trace_id_hex(context: Context | None = None) -> str | None:
    """The current (or the context's) OpenTelemetry trace id as 32 hex digits, if there is one."""
    span_context = trace.get_current_span(context).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def w3c_context(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate`` if any) of the current span, for an envelope or options."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return {name: carrier[name] for name in W3C_FIELDS if name in carrier}


def extract(carrier: Mapping[str, Any] | None) -> Context:
    """The context a message or an envelope carries; an empty one (a new trace) if it has none."""
    fields = {name: str(carrier[name]) for name in W3C_FIELDS if carrier and carrier.get(name)}
    return propagate.extract(fields)


@contextmanager
def producer_span(queue_name: str, actor_name: str, *, parent: Mapping[str, Any]) -> Iterator[None]:
    """Publishing one message of an event: a child of the envelope's context, current meanwhile."""
    with tracer.start_as_current_span(
        f"publish {queue_name}",
        context=extract(parent),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue_name,
            "messaging.dramatiq.actor": actor_name,
        },
    ):
        yield


def client_trace_configs() -> list[aiohttp.TraceConfig]:
    """For ``aiohttp.ClientSession(trace_configs=…)``: each call a client span sending traceparent."""
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config()]


def _route_of(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server span per request, continuing the caller's trace; first, so it covers the others."""
    if request.path in UNTRACED_PATHS:
        return await handler(request)
    route = _route_of(request)
    attributes: dict[str, str | int] = {"http.request.method": request.method, "url.path": request.path}
    if route:
        attributes["http.route"] = route
    with tracer.start_as_current_span(
        f"{request.method} {route}" if route else request.method,
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _record_status(span, exc.status)
            raise
        _record_status(span, response.status)
        return response


def _record_status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
