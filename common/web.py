"""The shape every service shares: middlewares, health, metrics, body parsing, JSON responses.

This is the HTTP side of ``common``: the problem middleware renders the domain errors of
``common/errors.py`` as RFC 9457 problems, and the request-context middleware binds each
request's trace id for logging. aiohttp's own HTTP exceptions (404 for an unknown route, 405,
413 from ``client_max_size``) are rendered the same way, so a client sees one error format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel

from common.errors import AppError, InvalidInput, MalformedRequest, Unauthenticated, UnsupportedMediaType
from common.failures import as_dependency_failure, describe
from common.health import DRAINING, HEALTH_CHECKS, liveness, readiness
from common.http_tracing import tracing_middleware
from common.logging import TRACE_ID, trace_id_from_headers
from common.metrics import (
    CLIENT_CLOSED_REQUEST,
    SERVICE_NAME,
    client_gone,
    metrics_handler_for,
    metrics_middleware,
)
from common.openapi import INSTANCE_DOCUMENT, load
from common.security import security_headers_middleware, setup_security
from common.types import Handler
from common.validation import validate

M = TypeVar("M", bound=BaseModel)
PROBLEM_CONTENT_TYPE = "application/problem+json"
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
log = structlog.get_logger(__name__)
# Bodies are small JSON documents; anything bigger is a mistake or an attack (413).
MAX_BODY_BYTES = 64 * 1024


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    trace_id = trace_id_from_headers(request.headers)
    request[REQUEST_ID] = trace_id
    # Each request runs in its own task, so contextvars bound here stay with this request.
    structlog.contextvars.bind_contextvars(
        **{TRACE_ID: trace_id, "http.request.method": request.method, "url.path": request.path}
    )
    try:
        response = await handler(request)
        response.headers["X-Request-ID"] = trace_id
        return response
    finally:
        # A keep-alive connection reuses its task; never let one request's ids leak into the next.
        structlog.contextvars.unbind_contextvars(TRACE_ID, "http.request.method", "url.path")


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def error_headers(exc: AppError) -> dict[str, str]:
    """The HTTP headers an error's facts call for: when to retry, how to authenticate."""
    headers: dict[str, str] = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return headers


def error_response(request: web.Request, exc: AppError) -> web.Response:
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        instance=request.path,
        errors=exc.errors,
        headers=error_headers(exc),
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as exc:
        if exc.status >= 500:
            log.warning("dependency_unavailable", detail=exc.detail)
        return error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and 2xx raised by handlers pass through untouched
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        if exc.status == 413:
            detail = "the request body is larger than this endpoint accepts"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on this resource"
        elif exc.status == 404:
            detail = "no such resource"
        else:
            detail = exc.text or HTTPStatus(exc.status).phrase
        return problem_response(
            exc.status, HTTPStatus(exc.status).phrase, detail, instance=request.path, headers=headers
        )
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and client_gone(request):
            # Nobody is left to answer (a load generator stopping, a client timing out mid-body):
            # no 500, no traceback; aiohttp drops the response it cannot write.
            log.info("client_disconnected", error=describe(exc))
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        failure = as_dependency_failure(exc)
        if failure is not None:
            # The client should come back (Retry-After), not give up as it would on a 500.
            log.warning("dependency_unavailable", dependency=failure.dependency, error=describe(exc))
            return error_response(request, failure)
        # Never leak a traceback to the client; it is in the log with the request id.
        log.exception("unhandled_error")
        return problem_response(
            500, "Internal Server Error", "an unexpected error occurred", instance=request.path
        )


def base_application(service: str, *, max_body_bytes: int = MAX_BODY_BYTES) -> web.Application:
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            # First: its server span is current for the others, so their logs carry its trace id.
            tracing_middleware,
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


def _serve(body: bytes, content_type: str) -> Handler:
    async def serve(request: web.Request) -> web.Response:
        # Public documents; revalidated often enough that a deploy shows up within a minute.
        headers = {"Cache-Control": "public, max-age=60"}
        return web.Response(body=body, content_type=content_type, headers=headers)

    return serve


def openapi_handler(path: Path) -> Handler:
    """The document at ``path`` as YAML, exactly as written."""
    return _serve(path.read_bytes(), "application/yaml")


def add_document_routes(router: web.UrlDispatcher, public: Path) -> None:
    """The public document at /openapi.yaml and /openapi.json, the instance's at /openapi/instance.*."""
    for prefix, path in (("/openapi", public), ("/openapi/instance", INSTANCE_DOCUMENT)):
        router.add_get(f"{prefix}.yaml", openapi_handler(path))
        as_json = json.dumps(load(path), indent=2).encode()
        router.add_get(f"{prefix}.json", _serve(as_json, "application/json"))
