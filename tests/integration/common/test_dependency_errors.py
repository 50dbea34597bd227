"""Every failure of a dependency is a 503 problem with Retry-After, never a 500.

One case per error class asyncpg, redis, aiormq and the aiohttp client can raise when their
server is down, slow or failing over; then the same through real clients against a port nothing
listens on and a real statement timeout; and the classes that mean a bug, which stay 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import aiormq
import aiormq.exceptions
import asyncpg
import pytest
import redis.asyncio
import redis.exceptions
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from common.amqp import AmqpUnavailable, ConfirmingPublisher, PublishRejected
from common.breaker import BreakerOpen
from common.failures import as_dependency_failure
from common.web import base_application
from tests.conftest import pg_dsn
from tests.net import free_port


def _pg(cls: type[asyncpg.PostgresError], message: str = "boom") -> asyncpg.PostgresError:
    return cls(message)


def _response_error(status: int) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(
        URL("http://users.internal/api/users/1"), "GET", CIMultiDictProxy(CIMultiDict())
    )
    return aiohttp.ClientResponseError(info, (), status=status)


def _delivery_error(cls: type[aiormq.exceptions.DeliveryError]) -> BaseException:
    # Their constructors want a broker frame; what matters here is only the class.
    exc = cls.__new__(cls)
    Exception.__init__(exc, "nacked")
    return exc


def _dependency_of(exc: BaseException) -> str:
    failure = as_dependency_failure(exc)
    assert failure is not None, f"{exc!r} is not seen as a dependency failure"
    assert failure.dependency is not None
    return failure.dependency


def _connector_error() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("users.internal", 8081, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


DEPENDENCY_FAILURES: dict[str, tuple[Callable[[], BaseException], str]] = {
    # asyncpg: the server is unreachable, went away, is shutting down or is overloaded
    "pg ConnectionDoesNotExistError": (lambda: _pg(asyncpg.ConnectionDoesNotExistError), "postgresql"),
    "pg ConnectionFailureError": (lambda: _pg(asyncpg.exceptions.ConnectionFailureError), "postgresql"),
    "pg ClientCannotConnectError": (lambda: _pg(asyncpg.exceptions.ClientCannotConnectError), "postgresql"),
    "pg ConnectionRejectionError": (lambda: _pg(asyncpg.exceptions.ConnectionRejectionError), "postgresql"),
    "pg ProtocolViolationError": (lambda: _pg(asyncpg.exceptions.ProtocolViolationError), "postgresql"),
    "pg TransactionResolutionUnknownError": (
        lambda: _pg(asyncpg.exceptions.TransactionResolutionUnknownError),
        "postgresql",
    ),
    "pg QueryCanceledError (statement timeout)": (lambda: _pg(asyncpg.QueryCanceledError), "postgresql"),
    "pg AdminShutdownError": (lambda: _pg(asyncpg.exceptions.AdminShutdownError), "postgresql"),
    "pg CrashShutdownError": (lambda: _pg(asyncpg.exceptions.CrashShutdownError), "postgresql"),
    "pg CannotConnectNowError": (lambda: _pg(asyncpg.CannotConnectNowError), "postgresql"),
    "pg IdleSessionTimeoutError": (lambda: _pg(asyncpg.exceptions.IdleSessionTimeoutError), "postgresql"),
    "pg TooManyConnectionsError": (lambda: _pg(asyncpg.TooManyConnectionsError), "postgresql"),
    "pg OutOfMemoryError": (lambda: _pg(asyncpg.exceptions.OutOfMemoryError), "postgresql"),
    "pg DiskFullError": (lambda: _pg(asyncpg.exceptions.DiskFullError), "postgresql"),
    "pg SerializationError": (lambda: _pg(asyncpg.SerializationError), "postgresql"),
    "pg DeadlockDetectedError": (lambda: _pg(asyncpg.DeadlockDetectedError), "postgresql"),
    "pg LockNotAvailableError": (lambda: _pg(asyncpg.LockNotAvailableError), "postgresql"),
    "pg ReadOnlySQLTransactionError": (lambda: _pg(asyncpg.ReadOnlySQLTransactionError), "postgresql"),
    "pg IdleInTransactionSessionTimeoutError": (
        lambda: _pg(asyncpg.exceptions.IdleInTransactionSessionTimeoutError),
        "postgresql",
    ),
    "pg PostgresIOError": (lambda: _pg(asyncpg.exceptions.PostgresIOError), "postgresql"),
    "pg InterfaceError (pool is closing)": (lambda: asyncpg.InterfaceError("pool is closing"), "postgresql"),
    "pg InternalClientError (server died mid-query)": (
        lambda: asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        "postgresql",
    ),
    # redis-py
    "redis ConnectionError": (lambda: redis.exceptions.ConnectionError("refused"), "redis"),
    "redis TimeoutError": (lambda: redis.exceptions.TimeoutError("Timeout reading"), "redis"),
    "redis BusyLoadingError": (lambda: redis.exceptions.BusyLoadingError("loading"), "redis"),
    "redis MaxConnectionsError": (lambda: redis.exceptions.MaxConnectionsError("too many"), "redis"),
    "redis AuthenticationError": (lambda: redis.exceptions.AuthenticationError("bad"), "redis"),
    "redis ReadOnlyError": (lambda: redis.exceptions.ReadOnlyError("replica"), "redis"),
    "redis OutOfMemoryError": (lambda: redis.exceptions.OutOfMemoryError("OOM"), "redis"),
    "redis TryAgainError": (lambda: redis.exceptions.TryAgainError("TRYAGAIN"), "redis"),
    "redis ClusterDownError": (lambda: redis.exceptions.ClusterDownError("down"), "redis"),
    "redis MasterDownError": (lambda: redis.exceptions.MasterDownError("down"), "redis"),
    # aiormq and the publisher over it
    "aiormq AMQPConnectionError": (lambda: aiormq.exceptions.AMQPConnectionError("refused"), "rabbitmq"),
    "aiormq ConnectionClosed": (lambda: aiormq.exceptions.ConnectionClosed(320, "forced"), "rabbitmq"),
    "aiormq IncompatibleProtocolError": (lambda: aiormq.exceptions.IncompatibleProtocolError(), "rabbitmq"),
    "aiormq ProbableAuthenticationError": (
        lambda: aiormq.exceptions.ProbableAuthenticationError(),
        "rabbitmq",
    ),
    "aiormq ChannelClosed": (lambda: aiormq.exceptions.ChannelClosed(406, "closed"), "rabbitmq"),
    "aiormq ChannelInvalidStateError": (
        lambda: aiormq.exceptions.ChannelInvalidStateError("closed"),
        "rabbitmq",
    ),
    "aiormq DeliveryError (nack)": (lambda: _delivery_error(aiormq.exceptions.DeliveryError), "rabbitmq"),
    "aiormq PublishError (returned)": (lambda: _delivery_error(aiormq.exceptions.PublishError), "rabbitmq"),
    "AmqpUnavailable": (lambda: AmqpUnavailable("not connected to RabbitMQ"), "rabbitmq"),
    "PublishRejected": (lambda: PublishRejected("nacked"), "rabbitmq"),
    # aiohttp client (service-to-service calls)
    "aiohttp ClientConnectorError": (_connector_error, "http upstream users.internal"),
    "aiohttp ServerDisconnectedError": (lambda: aiohttp.ServerDisconnectedError(), "http upstream"),
    "aiohttp ServerTimeoutError": (lambda: aiohttp.ServerTimeoutError("read timeout"), "http upstream"),
    "aiohttp ClientOSError": (lambda: aiohttp.ClientOSError(104, "reset"), "http upstream"),
    "aiohttp ClientPayloadError": (lambda: aiohttp.ClientPayloadError("cut"), "http upstream"),
    "aiohttp ClientResponseError 503": (lambda: _response_error(503), "http upstream users.internal"),
    # the breaker and builtins
    "BreakerOpen": (lambda: BreakerOpen("user_service", 7.2), "user_service"),
    "TimeoutError (pool acquire)": (lambda: TimeoutError(), "a dependency (timeout)"),
    "ConnectionRefusedError": (lambda: ConnectionRefusedError(111, "refused"), "a dependency (network)"),
    "ConnectionResetError": (lambda: ConnectionResetError(104, "reset"), "a dependency (network)"),
}

BUGS: dict[str, Callable[[], BaseException]] = {
    "ValueError": lambda: ValueError("bad"),
    "KeyError": lambda: KeyError("x"),
    "pg UndefinedTableError": lambda: asyncpg.UndefinedTableError("no table"),
    "pg UniqueViolationError": lambda: asyncpg.UniqueViolationError("dup"),
    "pg DataError (client side)": lambda: asyncpg.DataError("invalid input"),
    "redis ResponseError": lambda: redis.exceptions.ResponseError("WRONGTYPE"),
    "aiohttp ClientResponseError 404": lambda: _response_error(404),
    "FileNotFoundError": lambda: FileNotFoundError(2, "missing"),
}


def _raising_app(make: Callable[[], BaseException]) -> web.Application:
    app = base_application("probe")

    async def fail(request: web.Request) -> web.Response:
        raise make()

    app.router.add_get("/fail", fail)
    return app


@pytest.mark.parametrize("name", sorted(DEPENDENCY_FAILURES))
async def test_each_dependency_error_is_503_with_retry_after(aiohttp_client: Any, name: str) -> None:
    make, dependency = DEPENDENCY_FAILURES[name]
    assert _dependency_of(make()) == dependency
    client = await aiohttp_client(_raising_app(make))
    response = await client.get("/fail")
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    body = await response.json()
    assert dependency in body["detail"]


@pytest.mark.parametrize("name", sorted(BUGS))
async def test_programming_errors_stay_500(aiohttp_client: Any, name: str) -> None:
    assert as_dependency_failure(BUGS[name]()) is None
    client = await aiohttp_client(_raising_app(BUGS[name]))
    response = await client.get("/fail")
    assert response.status == 500
    assert "Retry-After" not in response.headers


def test_the_cause_chain_is_followed() -> None:
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = redis.exceptions.ConnectionError("refused")
    assert _dependency_of(wrapped) == "redis"


def test_breaker_retry_after_is_kept() -> None:
    failure = as_dependency_failure(BreakerOpen("user_service", 7.2))
    assert failure is not None
    assert failure.retry_after_s == 8


# --- the same through the real client libraries -------------------------------------------


async def _caught(operation: Callable[[], Any]) -> BaseException:
    try:
        await operation()
    except BaseException as exc:
        return exc
    raise AssertionError("the operation did not fail")


async def test_real_asyncpg_connect_refused_is_postgresql() -> None:
    exc = await _caught(
        lambda: asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=2)
    )
    assert _dependency_of(exc) == "postgresql"


async def test_real_statement_timeout_is_postgresql() -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await conn.execute("SET statement_timeout = 50")
        exc = await _caught(lambda: conn.execute("SELECT pg_sleep(2)"))
    finally:
        await conn.close()
    assert isinstance(exc, asyncpg.QueryCanceledError)
    assert _dependency_of(exc) == "postgresql"


async def test_real_pool_acquire_timeout_is_postgresql() -> None:
    pool = await asyncpg.create_pool(pg_dsn("postgres"), min_size=1, max_size=1)
    assert pool is not None
    try:
        async with pool.acquire():
            exc = await _caught(lambda: pool.acquire(timeout=0.05))
    finally:
        await pool.close()
    assert _dependency_of(exc) == "postgresql"


async def test_real_command_timeout_is_postgresql() -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"), command_timeout=0.05)
    try:
        exc = await _caught(lambda: conn.execute("SELECT pg_sleep(2)"))
    finally:
        await conn.close()
    assert _dependency_of(exc) == "postgresql"


async def test_real_redis_refused_is_redis() -> None:
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=1)
    try:
        exc = await _caught(client.ping)
    finally:
        await client.aclose()
    assert _dependency_of(exc) == "redis"


async def test_real_aiormq_refused_is_rabbitmq() -> None:
    exc = await _caught(lambda: aiormq.connect(f"amqp://guest:guest@127.0.0.1:{free_port()}/"))
    assert _dependency_of(exc) == "rabbitmq"


async def test_real_publisher_refused_is_rabbitmq() -> None:
    publisher = ConfirmingPublisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/", connect_timeout_s=2)
    exc = await _caught(publisher.connect)
    assert _dependency_of(exc) == "rabbitmq"


async def test_real_http_refused_is_http_upstream() -> None:
    async with aiohttp.ClientSession() as session:
        exc = await _caught(lambda: session.get(f"http://127.0.0.1:{free_port()}/"))
    assert _dependency_of(exc) == "http upstream 127.0.0.1"


async def test_real_http_read_timeout_is_http_upstream() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            timeout = aiohttp.ClientTimeout(sock_read=0.1)
            exc = await _caught(lambda: session.get(f"http://127.0.0.1:{port}/", timeout=timeout))
    finally:
        server.close()
    assert _dependency_of(exc).startswith("http upstream")
