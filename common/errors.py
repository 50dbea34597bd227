"""The one error hierarchy of the system, and the middleware that renders it as RFC 9457 problems.

Services raise these as facts about the request (``NotFound``, ``Conflict`` …); only the
middleware knows about HTTP. aiohttp's own HTTP exceptions (404 for an unknown route, 405,
413 from ``client_max_size``) are rendered the same way, so a client sees one error format.
"""

from __future__ import annotations

import errno
import json
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar

import aiohttp
import aiormq.exceptions
import asyncpg
import redis.exceptions
import structlog
from aiohttp import web

from common.amqp import AmqpUnavailable, PublishRejected
from common.breaker import BreakerOpen

PROBLEM_CONTENT_TYPE = "application/problem+json"
log = structlog.get_logger(__name__)


class AppError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})


class MalformedRequest(AppError):
    status = 400
    title = "Malformed Request"


class Unauthenticated(AppError):
    status = 401
    title = "Unauthenticated"

    def __init__(self, detail: str = "a valid bearer token is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class Forbidden(AppError):
    status = 403
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    title = "Not Found"


class Conflict(AppError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(AppError):
    status = 413
    title = "Payload Too Large"


class UnsupportedMediaType(AppError):
    status = 415
    title = "Unsupported Media Type"


class InvalidInput(AppError):
    status = 422
    title = "Invalid Input"


class TooManyRequests(AppError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s


class DependencyUnavailable(AppError):
    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 5, dependency: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s
        self.dependency = dependency


# --- dependency failures ------------------------------------------------------------------
# One place decides which exceptions of the client libraries mean "a dependency is down or too
# slow" (retry later: 503 + Retry-After) rather than "this code is wrong" (500). A handler never
# catches them itself; problem_middleware asks ``as_dependency_failure``.
DEPENDENCY_RETRY_AFTER_S = 2

_POSTGRES_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08: refused, reset, connection does not exist
    asyncpg.exceptions.OperatorInterventionError,  # 57: statement timeout, admin/crash shutdown, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full, out of memory
    asyncpg.exceptions.TransactionRollbackError,  # 40: serialization failure, deadlock
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: connected to a standby after a failover
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    asyncpg.exceptions.PostgresSystemError,  # 58: I/O error on the server
)
_REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, busy loading, max connections, auth
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica after a failover
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
_AMQP_TRANSIENT: tuple[type[BaseException], ...] = (
    AmqpUnavailable,
    PublishRejected,
    aiormq.exceptions.AMQPError,  # connection and channel closed, refused, nacked deliveries
    aiormq.exceptions.ChannelInvalidStateError,
)
_HTTP_TRANSIENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,  # refused, reset, disconnected, socket read timeout
    aiohttp.ClientPayloadError,
)
# Builtin errors say nothing of who raised them; the traceback does (see _raised_by).
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
    }
)
_LIBRARIES = {
    "asyncpg": "postgresql",
    "redis": "redis",
    "aiormq": "rabbitmq",
    "pamqp": "rabbitmq",
    "aiohttp": "http upstream",
}


def _raised_by(tb: TracebackType | None) -> str | None:
    """The dependency whose client library the innermost matching frame belongs to."""
    found = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        library = _LIBRARIES.get(module.partition(".")[0])
        if library is not None:
            found = library
        tb = tb.tb_next
    return found


def _classify(exc: BaseException) -> str | None:
    if isinstance(exc, DependencyUnavailable):
        return exc.dependency or "dependency"
    if isinstance(exc, BreakerOpen):
        return exc.name
    if (
        isinstance(exc, _POSTGRES_TRANSIENT)
        or type(exc) is asyncpg.InterfaceError
        or isinstance(exc, asyncpg.exceptions.InternalClientError)
    ):
        # A bare InterfaceError is "connection is closed" / "pool is closing"; InternalClientError
        # is the protocol state a connection is left in when the server dies mid-query ("cannot
        # switch to state 15; another operation is in progress", seen when PostgreSQL crashed).
        # The other subclasses (DataError, client configuration) are our own mistakes: 500.
        return "postgresql"
    if isinstance(exc, _REDIS_TRANSIENT):
        return "redis"
    if isinstance(exc, _AMQP_TRANSIENT):
        return "rabbitmq"
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status >= 500:
        return f"http upstream {exc.request_info.real_url.host}"
    if isinstance(exc, _HTTP_TRANSIENT):
        host = getattr(exc, "host", None)
        return f"http upstream {host}" if host else "http upstream"
    if isinstance(exc, TimeoutError):  # pool acquire, command_timeout, asyncio.timeout
        return _raised_by(exc.__traceback__) or "a dependency (timeout)"
    if isinstance(exc, socket.gaierror) or (isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS):
        return _raised_by(exc.__traceback__) or "a dependency (network)"
    return None


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # some library exceptions (aiormq DeliveryError) cannot render themselves
        text = ""
    return f"{type(exc).__name__}: {text}"[:300]


def as_dependency_failure(exc: BaseException) -> DependencyUnavailable | None:
    """``exc`` (or what it was raised from) as a 503, if it means a dependency failed; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        dependency = _classify(current)
        if dependency is not None:
            if isinstance(current, DependencyUnavailable):
                return current
            retry_after = DEPENDENCY_RETRY_AFTER_S
            if isinstance(current, BreakerOpen):
                retry_after = max(1, math.ceil(current.retry_after_s))
            return DependencyUnavailable(
                f"{dependency} is unavailable; try again shortly",
                retry_after_s=retry_after,
                dependency=dependency,
            )
        current = current.__cause__ or current.__context__
    return None


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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as exc:
        if exc.status >= 500:
            log.warning("dependency_unavailable", detail=exc.detail)
        return problem_response(
            exc.status, exc.title, exc.detail, instance=request.path, errors=exc.errors, headers=exc.headers
        )
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
        failure = as_dependency_failure(exc)
        if failure is not None:
            # The client should come back (Retry-After), not give up as it would on a 500.
            log.warning(
                "dependency_unavailable",
                dependency=failure.dependency,
                error=_describe(exc),
            )
            return problem_response(
                failure.status, failure.title, failure.detail, instance=request.path, headers=failure.headers
            )
        # Never leak a traceback to the client; it is in the log with the request id.
        log.exception("unhandled_error")
        return problem_response(
            500, "Internal Server Error", "an unexpected error occurred", instance=request.path
        )
