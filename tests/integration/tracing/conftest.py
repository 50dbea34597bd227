"""Fixtures for the tracing test: an in-memory span exporter as this process's provider, and the
workers' and notifier's fixtures (real RabbitMQ vhost, databases, SMTP server, a real Worker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from tests.integration.workers import conftest as worker_fixtures

notifications_db = worker_fixtures.notifications_db
orders_db = worker_fixtures.orders_db
smtp = worker_fixtures.smtp
provider = worker_fixtures.provider
templates_dir = worker_fixtures.templates_dir
worker_env = worker_fixtures.worker_env
start_worker = worker_fixtures.start_worker


def _install(provider: TracerProvider | None) -> None:
    # OpenTelemetry lets a process set its provider once; its own test utilities reset the same
    # two globals to install another one.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, kept in memory (sampled: the default ParentBased(ALWAYS_ON))."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = trace.get_tracer_provider()
    _install(tracer_provider)
    yield exporter
    tracer_provider.shutdown()
    _install(previous if isinstance(previous, TracerProvider) else None)
