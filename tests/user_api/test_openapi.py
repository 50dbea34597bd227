from __future__ import annotations

from tests.openapi_check import CheckedClient, app_operations, documented_operations
from user_api.routes import OPENAPI_PATH


async def test_every_route_is_documented_and_nothing_else(client: CheckedClient) -> None:
    assert app_operations(client.app) == documented_operations(OPENAPI_PATH)


async def test_the_document_is_served(client: CheckedClient) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status == 200
    assert (await response.text()).startswith("openapi: 3.1")


async def test_health_metrics_and_readiness(client: CheckedClient) -> None:
    assert (await client.get("/health")).status == 200
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["components"] == {"postgresql": {"status": "UP"}, "redis": {"status": "UP"}}
    await client.get("/api/users/00000000-0000-4000-8000-000000000000")
    metrics = await (await client.get("/metrics")).text()
    assert (
        'http_requests_total{method="GET",route="/api/users/{id}",service="user_api",status="401"}' in metrics
    )
    assert "00000000-0000-4000-8000-000000000000" not in metrics
