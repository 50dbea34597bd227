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

import math
from collections.abc import Sequence

import aiohttp
import structlog
from pydantic import ValidationError

from common.breaker import Breaker, BreakerOpen, BreakerState
from common.errors import DependencyUnavailable, Unauthenticated
from common.failover import Answer, FailoverClient
from common.failover import ServiceFailed as UserServiceFailed
from common.logging import current_trace_id
from common.tracing import client_span
from order_api.contact_cache import ContactCache
from order_api.schemas import Contact

log = structlog.get_logger(__name__)


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
        contacts: ContactCache | None = None,
    ) -> None:
        # Instance selection, health and failover are shared with the notifier (common/failover.py).
        self._instances = FailoverClient(
            session,
            base_urls,
            service="user_api",
            timeout_s=timeout_s,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            instance_cooloff_s=instance_cooloff_s,
        )
        self.breaker = breaker
        # Recent answers (order_api/contact_cache.py): most orders need no call at all, and orders
        # go on through a short user_api outage. Only found users are kept.
        self.contacts = contacts

    async def fetch_contact(self, user_id: str, bearer_token: str) -> Contact | None:
        """The user's contact data, or None if user_api does not know the user (or deleted it)."""
        if self.contacts is None:
            return await self._fetch_contact(user_id, bearer_token)
        cached = self.contacts.get(user_id)
        if cached is not None:
            return cached
        generation = self.contacts.generation
        contact = await self._fetch_contact(user_id, bearer_token)
        if contact is not None:
            self.contacts.put(user_id, contact, generation=generation)
        return contact

    async def _fetch_contact(self, user_id: str, bearer_token: str) -> Contact | None:
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
        headers = {"Authorization": f"Bearer {bearer_token}", "Accept": "application/json"}
        trace_id = current_trace_id()
        if trace_id:
            headers["X-Request-ID"] = trace_id
        # One client span for the call, failover included; user_api continues it (traceparent).
        with client_span("GET /api/users/{id}", headers, **{"http.request.method": "GET"}) as span:
            answer = await self._instances.get(path, headers)
            span.set_attribute("http.response.status_code", answer.status)
            return answer
