from __future__ import annotations

from typing import Any

from tests.integration.user_api.conftest import SPEC, unique_email
from tests.openapi_check import CheckedClient
from user_api.app import create_app
from user_api.settings import Settings


async def test_login_rate_limit_per_ip_counts_the_forwarded_client(
    aiohttp_client: Any, settings: Settings
) -> None:
    limited = settings.model_copy(update={"login_max_attempts_per_ip": 3})
    client = CheckedClient(await aiohttp_client(create_app(limited)), SPEC)
    attacker = {"X-Real-IP": "203.0.113.7"}
    statuses = [
        (
            await client.post(
                "/api/auth/login", json={"email": unique_email(), "password": "x"}, headers=attacker
            )
        ).status
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    # A different client behind the same (trusted) gateway is not punished for it.
    other = await client.post(
        "/api/auth/login",
        json={"email": unique_email(), "password": "x"},
        headers={"X-Real-IP": "203.0.113.8"},
    )
    assert other.status == 401
