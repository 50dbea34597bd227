"""Liveness (``/health``: the process answers) and readiness (``/health/ready``: its dependencies do).

Readiness names the dependency that failed, so an operator reading a 503 knows where to look.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from common.metrics import SERVICE_NAME

HealthCheck = Callable[[], Awaitable[object]]
HEALTH_CHECKS: web.AppKey[dict[str, HealthCheck]] = web.AppKey("health_checks", dict)
CHECK_TIMEOUT_S = 2.0


def add_health_check(app: web.Application, name: str, check: HealthCheck) -> None:
    app[HEALTH_CHECKS][name] = check


async def liveness(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "service": request.app[SERVICE_NAME]})


async def _run_check(check: HealthCheck) -> str | None:
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # a readiness probe reports every failure, whatever its type
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def readiness(request: web.Request) -> web.Response:
    checks = request.app[HEALTH_CHECKS]
    names = list(checks)
    results = await asyncio.gather(*(_run_check(checks[name]) for name in names))
    components = {
        name: ({"status": "UP"} if error is None else {"status": "DOWN", "error": error})
        for name, error in zip(names, results, strict=True)
    }
    failed = [name for name, error in zip(names, results, strict=True) if error is not None]
    body = {
        "status": "DOWN" if failed else "UP",
        "service": request.app[SERVICE_NAME],
        "components": components,
    }
    if failed:
        body["detail"] = "unavailable: " + ", ".join(failed)
    return web.json_response(body, status=503 if failed else 200)
