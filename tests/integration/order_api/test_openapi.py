"""The OpenAPI documents are the contract: routes, schemas generated from the models, every answer.

Every response of every test is checked against the documents (CheckedClient); here, that the
documents describe the app's routes, and that their schemas are what the handlers' models
generate, so a constraint added to a model without `python -m common.openapi sync` fails.
"""

from __future__ import annotations

from collections.abc import Callable

from common.openapi import block_in, generated_block, load
from order_api.routes import OPENAPI_PATH
from order_api.schemas import OPENAPI_MODELS, OrderListQuery
from tests.integration.order_api.conftest import User, place
from tests.openapi_check import (
    CheckedClient,
    assert_documents_served,
    assert_operations_described,
    assert_routes_documented_once,
    assert_token_required_as_documented,
    model_query_parameters,
    query_parameters,
    request_body_refs,
)

# What each handler validates its body with (order_api/handlers.py): the document must say the same.
HANDLER_BODIES = {("POST", "/api/orders"): "OrderIn", ("PUT", "/api/orders/{id}/status"): "StatusChangeIn"}


async def test_every_route_is_documented_once_and_nothing_else(client: CheckedClient) -> None:
    assert_routes_documented_once(client, OPENAPI_PATH)


async def test_the_token_is_required_exactly_where_the_document_says(client: CheckedClient) -> None:
    await assert_token_required_as_documented(client, OPENAPI_PATH)


def test_the_schemas_are_what_the_models_generate() -> None:
    assert block_in(OPENAPI_PATH) == generated_block(OPENAPI_MODELS)


def test_each_body_and_query_is_the_handlers_model() -> None:
    document = load(OPENAPI_PATH)
    assert request_body_refs(document) == HANDLER_BODIES
    assert query_parameters(document, "GET", "/api/orders") == model_query_parameters(OrderListQuery)


def test_every_operation_has_an_id_a_summary_and_examples() -> None:
    assert_operations_described(OPENAPI_PATH)


async def test_the_documents_are_served_as_yaml_and_json(client: CheckedClient) -> None:
    await assert_documents_served(client, OPENAPI_PATH)


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
