"""Distributed tracing with OpenTelemetry: one W3C trace from the gateway to the email.

Each process sets up one TracerProvider (``setup_tracing``: the APIs in
``common.http_tracing.tracing_ctx``, their first cleanup context; the workers in
``workers.tracing``). The context travels as W3C ``traceparent``/``tracestate``:

- HTTP (``common.http_tracing``, the aiohttp side): a server span per request continues the
  caller's trace (the gateway passes or starts one); client sessions send it on.
- Events: ``common.events.new_event`` writes the current context into the envelope, beside
  ``trace_id``; the outbox relay publishes each message in a producer span (``producer_span``)
  whose context goes into the Dramatiq message's options; the workers continue from there.

The settings are OpenTelemetry's own names (``OTEL_TRACES_EXPORTER`` …, ``common.settings``).
With the exporter ``none`` spans are never recorded (the sampler says no), so tracing costs an id
per span; trace ids are still made and propagated, so logs, events and emails carry them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from common.settings import BaseServiceSettings

# The W3C Trace Context fields, in HTTP headers, event envelopes and message options alike.
W3C_FIELDS = ("traceparent", "tracestate")

TRACER_NAME = "microservices-app"
_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The project's tracer from the provider installed now (a test may install its own)."""
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer(TRACER_NAME))
    return _tracer[1]


def sampler_for(settings: BaseServiceSettings) -> Sampler:
    if settings.otel_traces_exporter == "none":
        return ALWAYS_OFF
    # A sampled caller's trace is recorded, so a trace is whole. An unsampled one (the gateway
    # starts traces with flags 00) is sampled by its trace id: the same decision in every service.
    by_trace_id = TraceIdRatioBased(settings.otel_traces_sampler_arg)
    return ParentBased(by_trace_id, remote_parent_not_sampled=by_trace_id)


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
    with tracer().start_as_current_span(
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


@contextmanager
def client_span(name: str, headers: dict[str, str], **attributes: str | int) -> Iterator[trace.Span]:
    """A call to another service: a client span, whose context ``headers`` then carry."""
    with tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        headers.update(w3c_context())
        yield span
