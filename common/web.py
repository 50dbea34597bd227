"""The shape every service shares: middlewares, health, metrics, body parsing, JSON responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel

from common.errors import InvalidInput, MalformedRequest, UnsupportedMediaType, problem_middleware
from common.health import DRAINING, HEALTH_CHECKS, liveness, readiness
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
    app[DRAINING] = asyncio.Event()
    setup_security(app)
    app.router.add_get("/health", liveness)
    app.router.add_get("/health/ready", readiness)
    app.router.add_get("/metrics", metrics_handler_for())
    return app


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def _unstorable(value: object, where: str = "body") -> str | None:
    """Where a string holds what PostgreSQL text and UTF-8 cannot (NUL, lone surrogates), if any."""
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
            return where
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable(key, where) or _unstorable(item, f"{where}.{key}" if where != "body" else key)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable(item, f"{where}.{index}")
            if found:
                return found
    return None


async def parse_body(request: web.Request, model: type[M], *, exact_numbers: bool = False) -> M:
    """Read and validate a JSON body: 415 for another media type, 400 for broken JSON, 422 else.

    With ``exact_numbers``, JSON numbers with a fraction become ``Decimal`` (money), never binary
    floats, and NaN/Infinity are malformed.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()
    try:
        if exact_numbers:
            data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        else:
            data = json.loads(raw)
        unstorable = _unstorable(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the body is not valid JSON") from None
    except RecursionError:
        # json.loads recurses per nesting level; 64 KiB of "[" would otherwise be a 500.
        raise MalformedRequest("the body is nested too deeply") from None
    if unstorable:
        # Valid JSON ("\u0000", "\udbfc") that no database column or email header can hold.
        raise InvalidInput(
            "the body contains NUL characters or unpaired UTF-16 surrogates",
            errors=[{"field": unstorable, "message": "contains NUL or an unpaired surrogate"}],
        )
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
