"""The one error hierarchy of the system. No aiohttp here, nor any client library.

``ServiceError`` is the root of every exception the project defines. ``AppError`` and its
subclasses are facts about a request (``NotFound``, ``Conflict`` …) that services raise; they
name their HTTP class (``status``) but carry no HTTP headers: the problem middleware in
``common/web.py`` renders them as RFC 9457 problems and adds ``Retry-After`` /
``WWW-Authenticate`` from the facts. Which client-library exceptions mean "a dependency is down"
is decided in ``common/failures.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """The root of every exception this project defines: ``except ServiceError`` is "one of ours"."""


class AppError(ServiceError):
    """A fact about a request that the caller should hear; ``status`` is its HTTP class."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    # Seconds after which trying again may succeed; the web side turns it into Retry-After.
    retry_after_s: int | None = None

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class MalformedRequest(AppError):
    status = 400
    title = "Malformed Request"


class Unauthenticated(AppError):
    status = 401
    title = "Unauthenticated"

    def __init__(self, detail: str = "a valid bearer token is required") -> None:
        super().__init__(detail)


class Forbidden(AppError):
    status = 403
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    title = "Not Found"


class Conflict(AppError):
    status = 409
    title = "Conflict"


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
        super().__init__(detail)
        self.retry_after_s = max(1, retry_after_s)


class DependencyUnavailable(AppError):
    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 5, dependency: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, retry_after_s)
        self.dependency = dependency
