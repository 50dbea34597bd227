"""The shape every service shares: middlewares, health, metrics, body parsing, JSON responses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from common.errors import InvalidInput, MalformedRequest, UnsupportedMediaType, problem_middleware
from common.health import HEALTH_CHECKS, liveness, readiness
from common.logging import request_context_middleware
from common.metrics import SERVICE_NAME, metrics_handler_for, metrics_middleware
from common.security import security_headers_middleware, setup_security
from common.validation import validate

M = TypeVar("M", bound=BaseModel)
# Bodies are small JSON documents; anything bigger is a mistake or an attack (413).
MAX_BODY_BYTES = 64 * 1024


def base_application(service: str, *, max_body_bytes: int = MAX_BODY_BYTES) -> web.Application:
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            request_context_middleware,
            metrics_middleware,
            security_headers_middleware,
            problem_middleware,
        ],
    )
    app[SERVICE_NAME] = service
    app[HEALTH_CHECKS] = {}
    setup_security(app)
    app.router.add_get("/health", liveness)
    app.router.add_get("/health/ready", readiness)
    app.router.add_get("/metrics", metrics_handler_for())
    return app


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read and validate a JSON body: 415 for another media type, 400 for broken JSON, 422 else."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the body is not valid JSON") from None
    except RecursionError:
        # json.loads recurses per nesting level; 64 KiB of "[" would otherwise be a 500.
        raise MalformedRequest("the body is nested too deeply") from None
    return validate(model, data)


def parse_query(request: web.Request, model: type[M]) -> M:
    # A repeated parameter (?offset=1&offset=2) is ambiguous; refuse it rather than pick one.
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        raise InvalidInput(
            "a query parameter is given more than once",
            errors=[{"field": key, "message": "given more than once"} for key in repeated],
        )
    return validate(model, dict(request.query))


def json_response(
    data: BaseModel | Mapping[str, Any] | list[Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    text = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data, default=str)
    return web.json_response(text=text, status=status, headers=dict(headers or {}))


def client_ip(request: web.Request, trusted_proxies: frozenset[str]) -> str:
    """The caller's address; proxy headers count only when the direct peer is a trusted proxy."""
    peer = request.remote or "unknown"
    if peer not in trusted_proxies:
        return peer
    real_ip = request.headers.get("X-Real-IP", "").strip()
    if real_ip:
        return real_ip[:64]
    forwarded = request.headers.get("X-Forwarded-For", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-1][:64] if hops else peer
