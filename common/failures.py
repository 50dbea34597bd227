"""Which exceptions of the client libraries mean "a dependency is down or too slow".

One place decides: those are a 503 with Retry-After (come back later), everything else is the
code's own mistake (500). A handler never catches them itself; the problem middleware
(``common/web.py``) and the delivery policy (``notifier/delivery.py``) ask
``as_dependency_failure``. No aiohttp import here: workers use this too.
"""

from __future__ import annotations

import errno
import math
import socket
import sys
from types import TracebackType
from typing import Any

import aiormq.exceptions
import asyncpg
import redis.exceptions

from common.amqp import AmqpUnavailable, PublishRejected
from common.breaker import BreakerOpen
from common.errors import DependencyUnavailable

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


def _http_client_failure(exc: BaseException) -> str | None:
    """aiohttp's client errors, looked up without importing aiohttp into the core.

    An exception of an aiohttp type can only exist once something imported aiohttp, so a process
    that never did (a worker without HTTP channels) has nothing to classify here.
    """
    aiohttp: Any = sys.modules.get("aiohttp")
    if aiohttp is None:
        return None
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status >= 500:
        return f"http upstream {exc.request_info.real_url.host}"
    # Refused, reset, disconnected, socket read timeout; a body cut off mid-way.
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        host = getattr(exc, "host", None)
        return f"http upstream {host}" if host else "http upstream"
    return None


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
    http_upstream = _http_client_failure(exc)
    if http_upstream is not None:
        return http_upstream
    if isinstance(exc, TimeoutError):  # pool acquire, command_timeout, asyncio.timeout
        return _raised_by(exc.__traceback__) or "a dependency (timeout)"
    if isinstance(exc, socket.gaierror) or (isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS):
        return _raised_by(exc.__traceback__) or "a dependency (network)"
    return None


def describe(exc: BaseException) -> str:
    """``Type: message`` for a log line, even for exceptions that cannot render themselves."""
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
