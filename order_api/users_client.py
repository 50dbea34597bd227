"""The one synchronous dependency of order_api: ``GET {USER_SERVICE_URL}/api/users/{id}``.

``USER_SERVICE_URL`` lists every user_api instance (comma-separated), so no single instance is on
the request path: calls rotate over the instances, an instance that failed (refused, reset, 5xx,
too slow) is passed over for a short cool-off, and a failed attempt moves on to the next instance
at once. With several instances the first attempt gets half the time budget, so a hanging
instance still leaves time for a healthy one.

The caller's own bearer token is forwarded, so user_api applies its own rules (a user sees only
themself; a deleted user is 404). One validation has a total time budget (about a second,
retries included) because a customer is waiting on it. Only connection errors, timeouts and 5xx
are retried; on the same instance with jittered backoff. The whole retried call is one call
through the circuit breaker, so the breaker trips when the user service as a whole fails (every
instance), not because one of two is gone; ``fail_max`` counts failed validations.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from prometheus_client import Gauge
from pydantic import ValidationError

from common.breaker import Breaker, BreakerOpen, BreakerState
from common.errors import DependencyUnavailable, Unauthenticated
from common.logging import current_trace_id
from order_api.schemas import Contact

log = structlog.get_logger(__name__)
INSTANCE_UP = Gauge(
    "user_service_instance_up", "1 while a user_api instance answers, 0 during its cool-off", ["instance"]
)


class UserServiceFailed(Exception):
    """user_api did not give a usable answer in time (down, slow, or 5xx)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass
class Instance:
    base_url: str
    down_until: float = 0.0


def split_base_urls(base_urls: str | Sequence[str]) -> list[str]:
    """``"http://a:8081, http://b:8091"`` (or a list) as clean base URLs without a trailing slash."""
    items = base_urls.split(",") if isinstance(base_urls, str) else list(base_urls)
    urls = [item.strip().rstrip("/") for item in items if item.strip()]
    if not urls:
        raise ValueError("at least one user service URL is required")
    return urls


class UsersClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_urls: str | Sequence[str],
        breaker: Breaker,
        *,
        timeout_s: float = 1.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.05,
        instance_cooloff_s: float = 2.0,
    ) -> None:
        self._session = session
        self.instances = [Instance(url) for url in split_base_urls(base_urls)]
        self.breaker = breaker
        self._timeout_s = timeout_s
        # Every instance gets a try, whatever the retry count says.
        self._attempts = max(max_retries + 1, len(self.instances))
        self._retry_backoff_s = retry_backoff_s
        self._cooloff_s = instance_cooloff_s
        self._rotation = itertools.count()
        for instance in self.instances:
            INSTANCE_UP.labels(instance.base_url).set(1)

    def _candidates(self, now: float) -> list[Instance]:
        """Instances in the order to try: rotated for balance, those in cool-off last."""
        start = next(self._rotation) % len(self.instances)
        rotated = self.instances[start:] + self.instances[:start]
        return sorted(rotated, key=lambda instance: instance.down_until > now)

    def _mark(self, instance: Instance, *, up: bool, now: float) -> None:
        was_down = instance.down_until > now
        instance.down_until = 0.0 if up else now + self._cooloff_s
        INSTANCE_UP.labels(instance.base_url).set(1 if up else 0)
        if up and was_down:
            log.info("user_service_instance_back", instance=instance.base_url)
        elif not up and not was_down:
            log.warning("user_service_instance_failed", instance=instance.base_url, cooloff_s=self._cooloff_s)

    async def fetch_contact(self, user_id: str, bearer_token: str) -> Contact | None:
        """The user's contact data, or None if user_api does not know the user (or deleted it)."""
        path = f"/api/users/{user_id}"
        try:
            answer = await self.breaker.call(lambda: self._get_with_retries(path, bearer_token))
        except BreakerOpen as exc:
            raise DependencyUnavailable(
                "the user service is unavailable; not trying again yet",
                retry_after_s=max(1, math.ceil(exc.retry_after_s)),
            ) from None
        except UserServiceFailed as exc:
            log.warning("user_service_failed", error=str(exc), breaker=self.breaker.state.name.lower())
            retry_after = (
                self.breaker.retry_after_header_s() if self.breaker.state is BreakerState.OPEN else 1
            )
            raise DependencyUnavailable(
                "the user service did not answer in time", retry_after_s=retry_after
            ) from None
        if answer.status == 200:
            try:
                return Contact.model_validate_json(answer.body)
            except ValidationError:
                log.error(
                    "user_service_contract_broken", body_prefix=answer.body[:200].decode(errors="replace")
                )
                raise DependencyUnavailable("the user service gave an unexpected answer") from None
        if answer.status == 404:
            return None
        if answer.status == 401:
            raise Unauthenticated("the user service did not accept the access token")
        log.error("user_service_unexpected_status", status=answer.status)
        raise DependencyUnavailable(f"the user service answered {answer.status}")

    async def _get_with_retries(self, path: str, bearer_token: str) -> Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        headers = {"Authorization": f"Bearer {bearer_token}", "Accept": "application/json"}
        trace_id = current_trace_id()
        if trace_id:
            headers["X-Request-ID"] = trace_id
        candidates = self._candidates(loop.time())
        failures: list[str] = []
        for attempt in range(self._attempts):
            instance = candidates[attempt % len(candidates)]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            is_last = attempt == self._attempts - 1
            switches = len(candidates) > 1
            # With another instance to fail over to, one hanging instance must not eat the budget.
            attempt_budget = remaining / 2 if switches and not is_last else remaining
            try:
                async with self._session.get(
                    instance.base_url + path,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=attempt_budget),
                    allow_redirects=False,
                ) as response:
                    body = await response.read()
                    if response.status < 500:
                        self._mark(instance, up=True, now=loop.time())
                        return Answer(response.status, body)
                    failure = f"answered {response.status}"
            except TimeoutError:
                failure = f"no answer within {attempt_budget:.2f} s"
                if attempt_budget >= remaining:
                    self._mark(instance, up=False, now=loop.time())
                    failures.append(f"{instance.base_url}: {failure}")
                    break  # the whole budget is spent
            except aiohttp.ClientError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            self._mark(instance, up=False, now=loop.time())
            failures.append(f"{instance.base_url}: {failure}")
            if is_last:
                break
            if candidates[(attempt + 1) % len(candidates)] is instance:
                # Same instance again: full jitter, so requests that failed together spread out.
                delay = random.uniform(0, self._retry_backoff_s * 2 ** (attempt + 1))  # noqa: S311 - jitter
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        if not failures:
            failures.append(f"no answer within {self._timeout_s:g} s")
        raise UserServiceFailed("; ".join(failures)[:500])
