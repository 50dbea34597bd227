"""User validation over HTTP: forwarding, retries, time budget, and the circuit breaker.

The settings fixture uses fail_max 5 and a 1 s reset timeout, so the breaker's whole cycle
(closed → open → half-open → closed) fits in a test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from prometheus_client import REGISTRY

from common.breaker import BreakerState
from order_api.settings import Settings
from order_api.state import DEPS
from tests.conftest import pg_dsn
from tests.integration.order_api.conftest import StandInUserService, User, order_body
from tests.openapi_check import CheckedClient

NewUser = Callable[..., User]


async def _create(client: CheckedClient, user: User) -> tuple[int, float, dict[str, str]]:
    started = time.perf_counter()
    response = await client.post("/api/orders", json=order_body(), headers=user.auth)
    await response.read()
    return response.status, time.perf_counter() - started, dict(response.headers)


def _breaker_gauge() -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"name": "user_service"})


async def _order_count(settings: Settings) -> int:
    conn = await asyncpg.connect(pg_dsn(settings.order_db_name))
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM orders")
        return count
    finally:
        await conn.close()


async def test_the_callers_token_is_forwarded(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    status, _, _ = await _create(client, user)
    assert status == 201
    assert user_service.last_authorization == f"Bearer {user.token}"


async def test_user_service_down_is_a_fast_503_with_retry_after(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService, settings: Settings
) -> None:
    user = new_user()
    await user_service.stop()
    status, elapsed, headers = await _create(client, user)
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert headers["Content-Type"].startswith("application/problem+json")
    assert elapsed < 1.0
    assert await _order_count(settings) == 0


async def test_a_slow_user_service_is_cut_off_at_the_time_budget(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    user_service.delay_s = 2.0
    status, elapsed, headers = await _create(client, user)
    assert status == 503
    assert "Retry-After" in headers
    assert 0.9 < elapsed < 1.8  # the 1 s budget, not the 2 s the service would take
    assert user_service.calls == 1  # a timeout spent the budget: no retry


async def test_5xx_is_retried_with_backoff_and_a_quick_recovery_succeeds(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    user_service.fail_next = 2
    status, _, _ = await _create(client, user)
    assert status == 201
    assert user_service.calls == 3  # the first try and two retries


async def test_5xx_beyond_the_retries_is_503(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    user_service.fail_with = 500
    status, _, _ = await _create(client, user)
    assert status == 503
    assert user_service.calls == 3


async def test_4xx_answers_are_not_retried_and_do_not_trip_the_breaker(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    del user_service.users[user.id]
    for _ in range(7):
        status, _, _ = await _create(client, user)
        assert status == 422
    assert user_service.calls == 7
    assert client.app[DEPS].users.breaker.state is BreakerState.CLOSED


async def test_a_401_from_the_user_service_is_passed_on(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    user_service.fail_with = 401
    status, _, headers = await _create(client, user)
    assert status == 401
    assert "WWW-Authenticate" in headers


async def test_an_answer_that_breaks_the_contract_is_503_not_500(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService
) -> None:
    user = new_user()
    user_service.users[user.id] = {"id": user.id, "unexpected": True}
    status, _, _ = await _create(client, user)
    assert status == 503


async def test_breaker_opens_then_half_opens_and_closes_when_the_service_is_back(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService, settings: Settings
) -> None:
    user = new_user()
    breaker = client.app[DEPS].users.breaker
    await user_service.stop()
    for _ in range(settings.user_service_breaker_fail_max):
        status, _, _ = await _create(client, user)
        assert status == 503
    assert breaker.state is BreakerState.OPEN
    assert _breaker_gauge() == 1

    # Open: refused at once, without touching the network, for the rest of the reset timeout.
    status, elapsed, headers = await _create(client, user)
    assert status == 503
    assert elapsed < 0.25  # refused without a network call
    assert 1 <= int(headers["Retry-After"]) <= 1 + settings.user_service_breaker_reset_s

    await user_service.start()
    calls_before = user_service.calls
    status, _, _ = await _create(client, user)
    assert status == 503  # still open: the reset timeout has not elapsed yet
    assert user_service.calls == calls_before

    await asyncio.sleep(settings.user_service_breaker_reset_s + 0.1)
    status, _, _ = await _create(client, user)
    assert status == 201  # the half-open trial call went through and closed the breaker
    assert breaker.state is BreakerState.CLOSED
    assert _breaker_gauge() == 0
    assert user_service.calls == calls_before + 1


async def test_a_failed_trial_call_opens_the_breaker_again(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService, settings: Settings
) -> None:
    user = new_user()
    breaker = client.app[DEPS].users.breaker
    user_service.fail_with = 503
    for _ in range(settings.user_service_breaker_fail_max):
        await _create(client, user)
    assert breaker.state is BreakerState.OPEN
    await asyncio.sleep(settings.user_service_breaker_reset_s + 0.1)
    calls_before = user_service.calls
    status, _, _ = await _create(client, user)
    assert status == 503
    assert user_service.calls > calls_before  # the trial really called
    assert breaker.state is BreakerState.OPEN
    status, elapsed, _ = await _create(client, user)
    assert status == 503
    assert elapsed < 0.25  # refused without a network call
