"""The one error hierarchy of the system, and the middleware that renders it as RFC 9457 problems.

Services raise these as facts about the request (``NotFound``, ``Conflict`` …); only the
middleware knows about HTTP. aiohttp's own HTTP exceptions (404 for an unknown route, 405,
413 from ``client_max_size``) are rendered the same way, so a client sees one error format.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from aiohttp import web

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

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s


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
    except Exception:
        # Never leak a traceback to the client; it is in the log with the request id.
        log.exception("unhandled_error")
        return problem_response(
            500, "Internal Server Error", "an unexpected error occurred", instance=request.path
        )
