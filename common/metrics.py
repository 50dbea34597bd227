"""RED metrics per service and route pattern, the ``/metrics`` endpoint, and one access-log line.

The route label is the route's pattern (``/api/users/{id}``), never the raw path: raw paths
would give every user id its own time series.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from common.types import Handler

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to produce the HTTP response",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SERVICE_NAME: web.AppKey[str] = web.AppKey("service_name", str)
log = structlog.get_logger("access")

# Paths scraped or probed every few seconds; counting them is useful, logging them is noise.
QUIET_PATHS = frozenset({"/metrics", "/health", "/health/ready"})


# nginx's code for a request its client closed before the answer: not the server's error.
CLIENT_CLOSED_REQUEST = 499


def client_gone(request: web.Request) -> bool:
    """The client closed its connection (mid-body, or while the handler ran)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        # Left mid-body, or, with handler cancellation on, while the handler ran.
        if client_gone(request):
            status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        elapsed = time.perf_counter() - started
        service = request.app[SERVICE_NAME]
        route = route_label(request)
        HTTP_REQUESTS.labels(service, request.method, route, str(status)).inc()
        HTTP_DURATION.labels(service, request.method, route).observe(elapsed)
        if request.path not in QUIET_PATHS:
            log.info(
                "request_finished",
                **{
                    "http.response.status_code": status,
                    "event.duration": int(elapsed * 1e9),
                    "http.route": route,
                    "client.ip": request.remote,
                },
            )


def metrics_handler_for(registry: CollectorRegistry = REGISTRY) -> Handler:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    return metrics
