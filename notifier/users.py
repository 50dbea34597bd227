"""Looking a user up in user_api, for sends addressed by user id.

``USER_SERVICE_URL`` lists every user_api instance (comma-separated), as for order_api: the
look-up rotates over them, passes over an instance that just failed and fails over to the next
within the same call (``common/failover.py``), so one user_api instance down costs no send.

The admin's own bearer token is forwarded, so user_api applies its own rules. Only the admin
send endpoint calls this, so a time budget is all the protection it needs (no breaker): there is
no customer-facing path that could pile up behind a slow user service.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog

from common.errors import DependencyUnavailable
from common.failover import FailoverClient, ServiceFailed
from common.logging import current_trace_id

log = structlog.get_logger(__name__)


class UserDirectory:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_urls: str | Sequence[str],
        *,
        timeout_s: float,
        instance_cooloff_s: float = 2.0,
    ) -> None:
        # No retries beyond one try per instance: an admin waits, and can send again.
        self._instances = FailoverClient(
            session,
            base_urls,
            service="user_api",
            timeout_s=timeout_s,
            max_retries=0,
            instance_cooloff_s=instance_cooloff_s,
        )

    async def get(self, user_id: str, bearer_token: str) -> dict[str, Any] | None:
        """The user resource (docs/contracts.md), or None if user_api does not know the user."""
        headers = {"Authorization": f"Bearer {bearer_token}", "Accept": "application/json"}
        if trace_id := current_trace_id():
            headers["X-Request-ID"] = trace_id
        try:
            answer = await self._instances.get(f"/api/users/{user_id}", headers)
        except ServiceFailed as exc:
            # The instances' addresses go to the log, not to the caller.
            log.warning("user_service_failed", error=str(exc))
            raise DependencyUnavailable("the user service is unavailable") from None
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise DependencyUnavailable(f"the user service answered {answer.status}")
        try:
            body = json.loads(answer.body)
        except ValueError:
            body = None
        if not isinstance(body, dict) or "email" not in body:
            raise DependencyUnavailable("the user service gave an unexpected answer")
        return body
