"""Looking a user up in user_api, for sends addressed by user id.

The admin's own bearer token is forwarded, so user_api applies its own rules. Only the admin
send endpoint calls this, so a short timeout is all the protection it needs: there is no
customer-facing path that could pile up behind a slow user service.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from common.errors import DependencyUnavailable
from common.logging import current_trace_id


class UserDirectory:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, timeout_s: float) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get(self, user_id: str, bearer_token: str) -> dict[str, Any] | None:
        """The user resource (docs/contracts.md), or None if user_api does not know the user."""
        headers = {"Authorization": f"Bearer {bearer_token}", "Accept": "application/json"}
        if trace_id := current_trace_id():
            headers["X-Request-ID"] = trace_id
        try:
            async with self._session.get(
                f"{self._base_url}/api/users/{user_id}", headers=headers, timeout=self._timeout
            ) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise DependencyUnavailable(f"the user service answered {response.status}")
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DependencyUnavailable(f"the user service is unavailable ({type(exc).__name__})") from None
        if not isinstance(body, dict) or "email" not in body:
            raise DependencyUnavailable("the user service gave an unexpected answer")
        return body
