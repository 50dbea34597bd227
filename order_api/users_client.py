"""The one synchronous dependency of order_api: ``GET {USER_SERVICE_URL}/api/users/{id}``.

The caller's own bearer token is forwarded, so user_api applies its own rules (a user sees only
themself; a deleted user is 404). One validation has a total time budget (about a second,
retries included) because a customer is waiting on it. Only connection errors and 5xx are
retried, with jittered backoff; a timeout has already spent the budget. The whole retried call
is one call through the circuit breaker, so ``fail_max`` counts failed validations, not attempts.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

import aiohttp
import structlog
from pydantic import ValidationError

from common.breaker import Breaker, BreakerOpen, BreakerState
from common.errors import DependencyUnavailable, Unauthenticated
from common.logging import current_trace_id
from order_api.schemas import Contact

log = structlog.get_logger(__name__)


class UserServiceFailed(Exception):
    """user_api did not give a usable answer in time (down, slow, or 5xx)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class UsersClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        breaker: Breaker,
        *,
        timeout_s: float = 1.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.05,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.breaker = breaker
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._retry_backoff_s = retry_backoff_s

    async def fetch_contact(self, user_id: str, bearer_token: str) -> Contact | None:
        """The user's contact data, or None if user_api does not know the user (or deleted it)."""
        url = f"{self._base_url}/api/users/{user_id}"
        try:
            answer = await self.breaker.call(lambda: self._get_with_retries(url, bearer_token))
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

    async def _get_with_retries(self, url: str, bearer_token: str) -> Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        headers = {"Authorization": f"Bearer {bearer_token}", "Accept": "application/json"}
        trace_id = current_trace_id()
        if trace_id:
            headers["X-Request-ID"] = trace_id
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UserServiceFailed(f"no answer within {self._timeout_s:g} s")
            try:
                async with self._session.get(
                    url,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=remaining),
                    allow_redirects=False,
                ) as response:
                    body = await response.read()
                    if response.status < 500:
                        return Answer(response.status, body)
                    failure = f"answered {response.status}"
            except TimeoutError:
                raise UserServiceFailed(f"no answer within {self._timeout_s:g} s") from None
            except aiohttp.ClientError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if attempt >= self._max_retries:
                raise UserServiceFailed(failure)
            attempt += 1
            # Full jitter: concurrent requests that failed together do not retry together.
            delay = random.uniform(0, self._retry_backoff_s * 2**attempt)  # noqa: S311 - jitter
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
