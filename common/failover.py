"""One HTTP service reached through several base URLs: balance, per-instance health, failover.

A setting such as ``USER_SERVICE_URL`` lists every instance (comma-separated), so no single
instance is on a request path. Calls rotate over the instances; an instance that failed (refused,
reset, 5xx, too slow) is passed over for a short cool-off, and a failed attempt moves on to the
next instance at once. With several instances an attempt that is not the last gets half of what
is left of the time budget, so one hanging instance still leaves time for a healthy one. Only
connection errors, timeouts and 5xx are retried (on the same instance with jittered backoff once
every instance had its try).

order_api's user validation (``order_api/users_client.py``) and the notifier's user look-up
(``notifier/users.py``) both reach user_api this way; what an answer means stays with them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from prometheus_client import Gauge

log = structlog.get_logger(__name__)
INSTANCE_UP = Gauge(
    "upstream_instance_up",
    "1 while an instance of a service this process calls answers, 0 during its cool-off",
    ["service", "instance"],
)


class ServiceFailed(Exception):
    """No instance gave a usable answer in time (down, slow, or 5xx)."""


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
        raise ValueError("at least one base URL is required")
    return urls


class FailoverClient:
    """GET on one service's instances; ``get`` answers the first status below 500."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_urls: str | Sequence[str],
        *,
        service: str,
        timeout_s: float,
        max_retries: int = 0,
        retry_backoff_s: float = 0.05,
        instance_cooloff_s: float = 2.0,
    ) -> None:
        self._session = session
        self.service = service
        self.instances = [Instance(url) for url in split_base_urls(base_urls)]
        self.timeout_s = timeout_s
        # Every instance gets a try, whatever the retry count says.
        self._attempts = max(max_retries + 1, len(self.instances))
        self._retry_backoff_s = retry_backoff_s
        self._cooloff_s = instance_cooloff_s
        self._rotation = itertools.count()
        for instance in self.instances:
            INSTANCE_UP.labels(service, instance.base_url).set(1)

    def candidates(self, now: float) -> list[Instance]:
        """Instances in the order to try: rotated for balance, those in cool-off last."""
        start = next(self._rotation) % len(self.instances)
        rotated = self.instances[start:] + self.instances[:start]
        return sorted(rotated, key=lambda instance: instance.down_until > now)

    def mark(self, instance: Instance, *, up: bool, now: float) -> None:
        was_down = instance.down_until > now
        instance.down_until = 0.0 if up else now + self._cooloff_s
        INSTANCE_UP.labels(self.service, instance.base_url).set(1 if up else 0)
        # "upstream", not "service": ECS logging owns service.name (the process's own service).
        if up and was_down:
            log.info("upstream_instance_back", upstream=self.service, instance=instance.base_url)
        elif not up and not was_down:
            log.warning(
                "upstream_instance_failed",
                upstream=self.service,
                instance=instance.base_url,
                cooloff_s=self._cooloff_s,
            )

    async def get(self, path: str, headers: Mapping[str, str]) -> Answer:
        """The first answer below 500 from any instance within the budget, or ServiceFailed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        candidates = self.candidates(loop.time())
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
                    headers=dict(headers),
                    timeout=aiohttp.ClientTimeout(total=attempt_budget),
                    allow_redirects=False,
                ) as response:
                    body = await response.read()
                    if response.status < 500:
                        self.mark(instance, up=True, now=loop.time())
                        return Answer(response.status, body)
                    failure = f"answered {response.status}"
            except TimeoutError:
                failure = f"no answer within {attempt_budget:.2f} s"
                if attempt_budget >= remaining:
                    self.mark(instance, up=False, now=loop.time())
                    failures.append(f"{instance.base_url}: {failure}")
                    break  # the whole budget is spent
            except aiohttp.ClientError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            self.mark(instance, up=False, now=loop.time())
            failures.append(f"{instance.base_url}: {failure}")
            if is_last:
                break
            if candidates[(attempt + 1) % len(candidates)] is instance:
                # Same instance again: full jitter, so requests that failed together spread out.
                delay = random.uniform(0, self._retry_backoff_s * 2 ** (attempt + 1))  # noqa: S311 - jitter
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        if not failures:
            failures.append(f"no answer within {self.timeout_s:g} s")
        raise ServiceFailed("; ".join(failures)[:500])
