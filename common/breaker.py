"""A typed circuit breaker around aiobreaker, with its state exported and logged on every change.

``Breaker.call(operation)`` either returns what ``operation`` returned, re-raises what it raised
(including on the call that trips the breaker: aiobreaker wraps that one in a
``CircuitBreakerError``, which we unwrap), or raises ``BreakerOpen`` when the operation was not
attempted at all. Callers therefore handle exactly two cases: "it failed" and "it was refused".

Two things aiobreaker does not do that a service needs:
- In half-open it lets every concurrent call through; here only one trial call runs at a time
  and the others are refused, so a recovering dependency is not stampeded.
- Its time arithmetic mixes ``datetime.now()`` and ``utcnow()`` and is only right under TZ=UTC;
  ``retry_after_s`` is computed here from a monotonic clock instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from enum import IntEnum
from typing import Any, TypeVar

import structlog
from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerState
from prometheus_client import Gauge

from common.errors import ServiceError

T = TypeVar("T")
log = structlog.get_logger(__name__)

BREAKER_STATE = Gauge(
    "circuit_breaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open", ["name"]
)


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


_FROM_AIOBREAKER = {
    CircuitBreakerState.CLOSED: BreakerState.CLOSED,
    CircuitBreakerState.OPEN: BreakerState.OPEN,
    CircuitBreakerState.HALF_OPEN: BreakerState.HALF_OPEN,
}


class BreakerOpen(ServiceError):
    """The breaker refused the call without attempting it."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_after_s:.1f} s")
        self.name = name
        self.retry_after_s = retry_after_s


class _StateListener:
    """aiobreaker's listener protocol (duck-typed: its base class is untyped)."""

    def __init__(self, owner: Breaker) -> None:
        self._owner = owner

    def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def failure(self, breaker: Any, exception: Exception) -> None:
        pass

    def success(self, breaker: Any) -> None:
        pass

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        old_state = _FROM_AIOBREAKER[old.state] if old is not None else None
        self._owner._on_state_change(old_state, _FROM_AIOBREAKER[new.state])


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout_s: float = 10.0,
        exclude: Iterable[type[Exception]] = (),
    ) -> None:
        if fail_max < 1 or reset_timeout_s <= 0:
            raise ValueError("fail_max must be >= 1 and reset_timeout_s > 0")
        self.name = name
        self.reset_timeout_s = reset_timeout_s
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._breaker = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_timeout_s),
            exclude=list(exclude),
            listeners=[_StateListener(self)],
            name=name,
        )
        BREAKER_STATE.labels(name).set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        return _FROM_AIOBREAKER[self._breaker.current_state]

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.reset_timeout_s - (time.monotonic() - self._opened_at))

    def retry_after_header_s(self) -> int:
        """``retry_after_s`` rounded up to whole seconds, at least 1, as Retry-After wants."""
        return max(1, math.ceil(self.retry_after_s()))

    def _on_state_change(self, old: BreakerState | None, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            self._opened_at = time.monotonic()
        BREAKER_STATE.labels(self.name).set(new)
        log_method = log.warning if new is BreakerState.OPEN else log.info
        log_method(
            "circuit_breaker_state_changed",
            breaker=self.name,
            from_state=old.name.lower() if old is not None else None,
            to_state=new.name.lower(),
        )

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self._trial_in_flight:
            raise BreakerOpen(self.name, max(self.retry_after_s(), 1.0))
        # Any call made while not closed is (or becomes, once the timeout has elapsed) the trial.
        is_trial = self.state is not BreakerState.CLOSED
        if is_trial:
            self._trial_in_flight = True
        try:
            result: T = await self._breaker.call_async(operation)
        except CircuitBreakerError as exc:
            if exc.__cause__ is not None:
                # The operation ran and failed, and that failure tripped the breaker:
                # the caller should see the real failure, not a refusal.
                raise exc.__cause__ from None
            raise BreakerOpen(self.name, self.retry_after_s()) from None
        finally:
            if is_trial:
                self._trial_in_flight = False
        return result
