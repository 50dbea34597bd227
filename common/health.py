"""Liveness (``/health``: the process answers) and readiness (``/health/ready``: its dependencies do).

Readiness names the dependency that failed, so an operator reading a 503 knows where to look.
A check that raises ``Degraded`` marks its component DEGRADED: still ready (200), status
"DEGRADED", so the instance keeps its traffic while the detail says what is wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_async.aio import time as timed
from prometheus_client import Histogram

from common.errors import ServiceError
from common.metrics import SERVICE_NAME

HealthCheck = Callable[[], Awaitable[object]]
HEALTH_CHECKS: web.AppKey[dict[str, HealthCheck]] = web.AppKey("health_checks", dict)
DRAINING: web.AppKey[asyncio.Event] = web.AppKey("draining", asyncio.Event)
CHECK_TIMEOUT_S = 2.0
# How long each dependency takes to answer its probe: a slow PostgreSQL shows here well before
# the probe times out and the instance leaves the load balancer. (prometheus_async.aio loads
# aiohttp, so it is used on this web side only, never in the core modules.)
READINESS_CHECK_DURATION = Histogram(
    "readiness_check_duration_seconds",
    "Time one readiness check of a dependency took",
    ["service", "component"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1.0, CHECK_TIMEOUT_S),
)


class Degraded(ServiceError):
    """The component works, but not as configured (e.g. serving the last good templates)."""


def add_health_check(app: web.Application, name: str, check: HealthCheck) -> None:
    app[HEALTH_CHECKS][name] = check


def start_draining(app: web.Application) -> None:
    """Readiness answers 503 from now on: load balancers stop sending before the listener closes."""
    app[DRAINING].set()


async def liveness(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "service": request.app[SERVICE_NAME]})


async def _run_check(check: HealthCheck, duration: Histogram) -> str | None:
    try:
        await asyncio.wait_for(timed(duration, check()), timeout=CHECK_TIMEOUT_S)
    except Degraded:
        raise
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # a readiness probe reports every failure, whatever its type
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def _check_state(check: HealthCheck, duration: Histogram) -> tuple[str, str | None]:
    try:
        error = await _run_check(check, duration)
    except Degraded as exc:
        return "DEGRADED", str(exc)[:300]
    return ("UP", None) if error is None else ("DOWN", error)


async def readiness(request: web.Request) -> web.Response:
    draining = request.app.get(DRAINING)
    if draining is not None and draining.is_set():
        return web.json_response(
            {"status": "DOWN", "service": request.app[SERVICE_NAME], "detail": "shutting down"},
            status=503,
            headers={"Retry-After": "1"},
        )
    checks = request.app[HEALTH_CHECKS]
    names = list(checks)
    service = request.app[SERVICE_NAME]
    states = await asyncio.gather(
        *(_check_state(checks[name], READINESS_CHECK_DURATION.labels(service, name)) for name in names)
    )
    components: dict[str, dict[str, str]] = {}
    for name, (state, detail) in zip(names, states, strict=True):
        components[name] = {"status": state}
        if detail is not None:
            components[name]["error" if state == "DOWN" else "detail"] = detail
    failed = [name for name, (state, _) in zip(names, states, strict=True) if state == "DOWN"]
    degraded = [name for name, (state, _) in zip(names, states, strict=True) if state == "DEGRADED"]
    body = {
        "status": "DOWN" if failed else ("DEGRADED" if degraded else "UP"),
        "service": request.app[SERVICE_NAME],
        "components": components,
    }
    if failed:
        body["detail"] = "unavailable: " + ", ".join(failed)
    elif degraded:
        body["detail"] = "degraded: " + ", ".join(degraded)
    return web.json_response(body, status=503 if failed else 200)
