"""Errors become RFC 9457 problems in one place (common.web.problem_middleware, common.failures).

The middleware is called directly with a mocked request: no server, no socket.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from common.breaker import BreakerOpen
from common.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from common.failures import as_dependency_failure
from common.web import PROBLEM_CONTENT_TYPE, problem_middleware


def raising(exc: BaseException) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def problem_for(exc: BaseException) -> tuple[web.Response, dict[str, Any]]:
    request = make_mocked_request("GET", "/api/orders/42")
    response = await problem_middleware(request, raising(exc))
    assert isinstance(response, web.Response)
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert isinstance(response.text, str)
    return response, json.loads(response.text)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Unauthenticated(), 401),
        (Forbidden("admins only"), 403),
        (NotFound("no such order"), 404),
        (Conflict("already shipped"), 409),
        (InvalidInput("bad", errors=[{"field": "x", "message": "y"}]), 422),
        (TooManyRequests("slow down", retry_after_s=7), 429),
        (DependencyUnavailable("redis is down", retry_after_s=3), 503),
    ],
)
async def test_a_domain_error_is_a_problem_with_its_status(error: Exception, status: int) -> None:
    response, body = await problem_for(error)
    assert response.status == status
    assert body["status"] == status
    assert body["instance"] == "/api/orders/42"
    assert body["type"] == "about:blank"


async def test_field_errors_are_listed() -> None:
    _, body = await problem_for(InvalidInput("bad", errors=[{"field": "email", "message": "invalid"}]))
    assert body["errors"] == [{"field": "email", "message": "invalid"}]


async def test_a_401_says_how_to_authenticate() -> None:
    response, _ = await problem_for(Unauthenticated())
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (TooManyRequests("slow down", retry_after_s=7), "7"),
        (DependencyUnavailable("x", retry_after_s=0), "1"),
    ],
)
async def test_a_retryable_error_says_when_to_retry(error: Exception, retry_after: str) -> None:
    response, _ = await problem_for(error)
    assert response.headers["Retry-After"] == retry_after


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        redis.exceptions.ConnectionError("Connection refused"),
        BreakerOpen("user_service", 4.2),
    ],
)
async def test_a_failing_dependency_is_503_with_retry_after_not_500(error: Exception) -> None:
    response, body = await problem_for(error)
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert "unavailable" in body["detail"]


async def test_an_open_breaker_says_when_it_lets_a_trial_through() -> None:
    response, _ = await problem_for(BreakerOpen("user_service", 4.2))
    assert response.headers["Retry-After"] == "5"


async def test_a_bug_is_a_500_without_the_traceback() -> None:
    response, body = await problem_for(KeyError("secret_internal_name"))
    assert response.status == 500
    assert "secret_internal_name" not in json.dumps(body)


async def test_our_own_sql_mistake_is_a_500_not_a_503() -> None:
    response, _ = await problem_for(asyncpg.exceptions.UndefinedColumnError("column x does not exist"))
    assert response.status == 500


def test_a_dependency_failure_is_found_behind_a_wrapping_error() -> None:
    try:
        try:
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        except redis.exceptions.TimeoutError as inner:
            raise RuntimeError("cache lookup failed") from inner
    except RuntimeError as outer:
        failure = as_dependency_failure(outer)
    assert failure is not None
    assert failure.dependency == "redis"


async def test_an_unknown_route_is_a_problem_too() -> None:
    response, body = await problem_for(web.HTTPNotFound())
    assert response.status == 404
    assert body["detail"] == "no such resource"
