"""The OpenAPI document matches the app: every route in it, every response (checked by CheckedClient)."""

from __future__ import annotations

from collections.abc import Callable

from order_api.routes import OPENAPI_PATH
from tests.openapi_check import CheckedClient, app_operations, documented_operations
from tests.order_api.conftest import User, place


async def test_every_route_is_documented_and_nothing_else(client: CheckedClient) -> None:
    assert app_operations(client.app) == documented_operations(OPENAPI_PATH)


async def test_the_document_is_served(client: CheckedClient) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status == 200
    assert response.content_type == "application/yaml"
    assert (await response.text()).startswith("openapi: 3.1")


async def test_health_readiness_and_metrics(client: CheckedClient, new_user: Callable[..., User]) -> None:
    assert (await client.get("/health")).status == 200
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["components"] == {"postgresql": {"status": "UP"}, "redis": {"status": "UP"}}
    user = new_user()
    order = await place(client, user)
    await client.get(f"/api/orders/{order['id']}", headers=user.auth)
    metrics = await (await client.get("/metrics")).text()
    assert (
        'http_requests_total{method="GET",route="/api/orders/{id}",service="order_api",status="200"}'
        in metrics
    )
    assert order["id"] not in metrics
    assert 'circuit_breaker_state{name="user_service"}' in metrics
