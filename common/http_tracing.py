"""The HTTP server side of tracing (aiohttp): a server span per request, the provider's lifetime
as a cleanup context. Kept out of ``common.tracing``, which the workers and the event
code import and which must not pull aiohttp in (tests/unit/test_import_rules.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from common.settings import BaseServiceSettings
from common.tracing import setup_tracing, shutdown_tracing, tracer
from common.types import CleanupCtx, Handler

# Probes and scrapes every few seconds: spans of them would bury the requests worth reading.
UNTRACED_PATHS = frozenset({"/health", "/health/ready", "/metrics"})


def tracing_ctx(service: str, settings: BaseServiceSettings) -> CleanupCtx:
    """The API's TracerProvider for the app's lifetime; add it first, so it ends last."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        provider = setup_tracing(service, settings)
        yield
        # The last export is a blocking HTTP call (bounded by the exporter's timeout).
        await asyncio.to_thread(shutdown_tracing, provider)

    return ctx


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
    with tracer().start_as_current_span(
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
