"""common.breaker: what callers see in each state, the exported state, and the half-open trial."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from common.breaker import Breaker, BreakerOpen, BreakerState


class Boom(Exception):
    pass


class NotAFault(Exception):
    pass


async def _fail() -> None:
    raise Boom("down")


async def _ok() -> str:
    return "ok"


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"name": name})


async def test_failures_below_fail_max_pass_through_unchanged() -> None:
    breaker = Breaker("t_below", fail_max=3, reset_timeout_s=60)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(_fail)
    assert breaker.state is BreakerState.CLOSED
    assert await breaker.call(_ok) == "ok"


async def test_the_tripping_call_raises_its_own_failure_and_later_calls_are_refused() -> None:
    breaker = Breaker("t_trip", fail_max=2, reset_timeout_s=60)
    with pytest.raises(Boom):
        await breaker.call(_fail)
    with pytest.raises(Boom):  # aiobreaker raises CircuitBreakerError here; we unwrap it
        await breaker.call(_fail)
    assert breaker.state is BreakerState.OPEN
    called = False

    async def spy() -> str:
        nonlocal called
        called = True
        return "ok"

    with pytest.raises(BreakerOpen) as refused:
        await breaker.call(spy)
    assert not called
    assert 59 < refused.value.retry_after_s <= 60
    assert breaker.retry_after_header_s() == 60


async def test_state_is_exported_and_logged_on_every_change() -> None:
    breaker = Breaker("t_export", fail_max=1, reset_timeout_s=0.2)
    assert _gauge("t_export") == 0
    with capture_logs() as logs:
        with pytest.raises(Boom):
            await breaker.call(_fail)
        assert _gauge("t_export") == 1
        await asyncio.sleep(0.25)
        assert await breaker.call(_ok) == "ok"
    assert _gauge("t_export") == 0
    changes = [
        (e["from_state"], e["to_state"]) for e in logs if e["event"] == "circuit_breaker_state_changed"
    ]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_half_open_lets_exactly_one_trial_call_through() -> None:
    breaker = Breaker("t_trial", fail_max=1, reset_timeout_s=0.1)
    with pytest.raises(Boom):
        await breaker.call(_fail)
    await asyncio.sleep(0.15)
    release = asyncio.Event()
    calls = 0

    async def slow_ok() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow_ok))
    await asyncio.sleep(0.01)
    assert breaker.state is BreakerState.HALF_OPEN
    for _ in range(3):
        with pytest.raises(BreakerOpen):
            await breaker.call(slow_ok)
    release.set()
    assert await trial == "ok"
    assert calls == 1
    assert breaker.state is BreakerState.CLOSED


async def test_excluded_exceptions_do_not_count() -> None:
    breaker = Breaker("t_exclude", fail_max=1, reset_timeout_s=60, exclude=[NotAFault])

    async def business_error() -> None:
        raise NotAFault()

    for _ in range(3):
        with pytest.raises(NotAFault):
            await breaker.call(business_error)
    assert breaker.state is BreakerState.CLOSED


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="fail_max"):
        Breaker("t_bad", fail_max=0)
