"""End to end with the real user_api: register, log in, order, cancel; process through RabbitMQ;
and the circuit breaker with user_api really stopped and started again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.breaker import BreakerState
from common.contexts import PG_POOL
from order_api.app import create_app
from order_api.lifecycle import process_order_created
from order_api.settings import Settings
from order_api.state import DEPS
from tests.integration.order_api.broker_tools import QueueReader
from tests.integration.order_api.conftest import SPEC, order_body, override
from tests.net import free_port
from tests.openapi_check import CheckedClient
from user_api.app import create_app as create_user_app
from user_api.settings import Settings as UserSettings


class RealUserApi:
    """user_api served on a fixed local port, so it can be stopped and started again."""

    def __init__(self, settings: UserSettings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(create_user_app(self.settings))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def register_and_login(self) -> dict[str, Any]:
        email = f"e2e.{uuid.uuid4().hex[:10]}@example.com"
        password = "a long enough password"
        async with aiohttp.ClientSession(self.url) as http:
            registered = await http.post(
                "/api/auth/register",
                json={
                    "email": email,
                    "password": password,
                    "name": "Grace Hopper",
                    "phone": "+14155550100",
                    "notification_preferences": {"email": True, "sms": True, "push": False},
                },
            )
            assert registered.status == 201, await registered.text()
            login = await http.post("/api/auth/login", json={"email": email, "password": password})
            assert login.status == 200, await login.text()
            tokens: dict[str, Any] = await login.json()
            return tokens


@pytest.fixture
async def user_api(
    database_factory: Callable[[str], str], redis_flushed: int, jwt_keys: dict[str, str]
) -> AsyncIterator[RealUserApi]:
    settings = UserSettings(
        app_env="test",
        user_db_name=database_factory("users_e2e"),
        redis_db=redis_flushed,  # the same Redis as order_api: revocations are shared, as deployed
        bcrypt_rounds=4,
        outbox_relay_enabled=False,
        log_format="console",
        **jwt_keys,
    )
    service = RealUserApi(settings)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def e2e_client(aiohttp_client: Any, settings: Settings, user_api: RealUserApi) -> CheckedClient:
    e2e_settings = override(settings, user_service_url=user_api.url)
    return CheckedClient(await aiohttp_client(create_app(e2e_settings)), SPEC)


def _auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_register_login_order_and_cancel_with_the_real_user_api(
    e2e_client: CheckedClient, user_api: RealUserApi
) -> None:
    tokens = await user_api.register_and_login()
    created = await e2e_client.post(
        "/api/orders", json=order_body(("BOOK-1", 2, "12.50")), headers=_auth(tokens)
    )
    assert created.status == 201, await created.text()
    order = await created.json()
    assert order["user_id"] == tokens["user"]["id"]
    assert order["total"] == "25.00"
    row = await e2e_client.app[PG_POOL].fetchrow("SELECT payload FROM outbox_events")
    assert row is not None
    contact = json.loads(row["payload"])["data"]["user"]
    assert contact == {
        "id": tokens["user"]["id"],
        "email": tokens["user"]["email"],
        "name": "Grace Hopper",
        "phone": "+14155550100",
        "notification_preferences": {"email": True, "sms": True, "push": False},
        "push_token": None,
    }
    cancelled = await e2e_client.delete(f"/api/orders/{order['id']}", headers=_auth(tokens))
    assert cancelled.status == 200
    assert (await cancelled.json())["status"] == "CANCELLED"


async def test_a_deleted_user_cannot_order(e2e_client: CheckedClient, user_api: RealUserApi) -> None:
    tokens = await user_api.register_and_login()
    async with aiohttp.ClientSession(user_api.url) as http:
        deleted = await http.delete(f"/api/users/{tokens['user']['id']}", headers=_auth(tokens))
        assert deleted.status == 204
    response = await e2e_client.post("/api/orders", json=order_body(), headers=_auth(tokens))
    assert response.status == 401  # user_api revoked the sessions; order_api reads the same list
    assert await e2e_client.app[PG_POOL].fetchval("SELECT count(*) FROM orders") == 0


async def test_breaker_with_user_api_stopped_then_back(
    e2e_client: CheckedClient, user_api: RealUserApi, settings: Settings
) -> None:
    tokens = await user_api.register_and_login()
    breaker = e2e_client.app[DEPS].users.breaker
    await user_api.stop()
    for _ in range(settings.user_service_breaker_fail_max):
        response = await e2e_client.post("/api/orders", json=order_body(), headers=_auth(tokens))
        assert response.status == 503
    assert breaker.state is BreakerState.OPEN
    started = time.perf_counter()
    refused = await e2e_client.post("/api/orders", json=order_body(), headers=_auth(tokens))
    assert refused.status == 503
    assert "Retry-After" in refused.headers
    assert time.perf_counter() - started < 0.25  # no network call: well under the 1 s budget

    await user_api.start()
    await asyncio.sleep(settings.user_service_breaker_reset_s + 0.1)
    response = await e2e_client.post("/api/orders", json=order_body(), headers=_auth(tokens))
    assert response.status == 201, await response.text()
    assert breaker.state is BreakerState.CLOSED


async def test_an_order_travels_through_rabbitmq_to_processing_and_back(
    aiohttp_client: Any, settings: Settings, user_api: RealUserApi, orders_vhost: str
) -> None:
    reader = QueueReader(orders_vhost, ("orders",))
    await reader.open(purge=True)
    client = CheckedClient(
        await aiohttp_client(
            create_app(
                override(
                    settings,
                    user_service_url=user_api.url,
                    outbox_relay_enabled=True,
                    rabbitmq_vhost=orders_vhost,
                )
            )
        ),
        SPEC,
    )
    tokens = await user_api.register_and_login()
    created = await client.post("/api/orders", json=order_body(), headers=_auth(tokens))
    assert created.status == 201
    order = await created.json()
    await reader.wait_for("orders", 1)
    await reader.close()
    [message] = reader.messages["orders"]
    assert message.actor_name == "orders.process"
    # What the workers' actor does with the message's single argument:
    processed = await process_order_created(
        client.app[PG_POOL], message.args[0], max_order_total=Decimal("100")
    )
    assert processed.status == "CONFIRMED"
    detail = await (await client.get(f"/api/orders/{order['id']}", headers=_auth(tokens))).json()
    assert detail["status"] == "CONFIRMED"
    assert detail["history"][-1]["changed_by"] == "orders.process"
