"""The circuit breaker in front of user_api (common.breaker): when it opens, refuses, and closes."""

from __future__ import annotations

import asyncio

import pytest

from common.breaker import Breaker, BreakerOpen, BreakerState


class Down(Exception):
    pass


class NotMine(Exception):
    pass


async def fail() -> None:
    raise Down("user_api is down")


async def ok() -> str:
    return "ok"


async def trip(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Down):
            await breaker.call(fail)


async def test_it_opens_after_fail_max_failures_and_the_last_failure_is_the_real_one() -> None:
    breaker = Breaker("unit-open", fail_max=3, reset_timeout_s=30)
    await trip(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    await trip(breaker, 1)  # the tripping call still shows the failure, not a refusal
    assert breaker.state is BreakerState.OPEN


async def test_an_open_breaker_refuses_without_calling_and_says_when_to_retry() -> None:
    breaker = Breaker("unit-refuse", fail_max=1, reset_timeout_s=30)
    await trip(breaker, 1)
    called = False

    async def operation() -> None:
        nonlocal called
        called = True

    with pytest.raises(BreakerOpen) as refused:
        await breaker.call(operation)
    assert not called
    assert 29 <= breaker.retry_after_s() <= 30
    assert breaker.retry_after_header_s() == 30
    assert refused.value.retry_after_s > 0


async def test_a_success_resets_the_failure_count() -> None:
    breaker = Breaker("unit-reset", fail_max=2, reset_timeout_s=30)
    await trip(breaker, 1)
    assert await breaker.call(ok) == "ok"
    await trip(breaker, 1)
    assert breaker.state is BreakerState.CLOSED


async def test_after_the_timeout_one_good_trial_closes_it() -> None:
    breaker = Breaker("unit-trial", fail_max=1, reset_timeout_s=0.05)
    await trip(breaker, 1)
    await asyncio.sleep(0.06)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.retry_after_s() == 0.0


async def test_a_failed_trial_opens_it_again() -> None:
    breaker = Breaker("unit-trial-fails", fail_max=1, reset_timeout_s=0.05)
    await trip(breaker, 1)
    await asyncio.sleep(0.06)
    await trip(breaker, 1)
    assert breaker.state is BreakerState.OPEN


async def test_only_one_trial_runs_at_a_time() -> None:
    breaker = Breaker("unit-one-trial", fail_max=1, reset_timeout_s=0.05)
    await trip(breaker, 1)
    await asyncio.sleep(0.06)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)
    release.set()
    assert await trial == "ok"


async def test_excluded_errors_do_not_count() -> None:
    breaker = Breaker("unit-exclude", fail_max=1, reset_timeout_s=30, exclude=[NotMine])

    async def mine() -> None:
        raise NotMine("a 404 is an answer, not an outage")

    for _ in range(3):
        with pytest.raises(NotMine):
            await breaker.call(mine)
    assert breaker.state is BreakerState.CLOSED


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="fail_max"):
        Breaker("unit-bad", fail_max=0)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        Breaker("unit-bad", reset_timeout_s=0)
