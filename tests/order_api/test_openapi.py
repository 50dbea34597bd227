"""The OpenAPI documents are the contract: routes, schemas generated from the models, every answer.

Every response of every test is checked against the documents (CheckedClient); here, that the
documents describe the app's routes, and that their schemas are what the handlers' models
generate, so a constraint added to a model without `python -m common.openapi sync` fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import yaml

from common.openapi import INSTANCE_DOCUMENT, block_in, generated_block, load
from order_api.routes import OPENAPI_PATH
from order_api.schemas import OPENAPI_MODELS, OrderListQuery
from tests.openapi_check import (
    CheckedClient,
    app_operations,
    assert_auth_is_as_documented,
    documented_operations,
    model_query_parameters,
    query_parameters,
    request_body_refs,
)
from tests.order_api.conftest import User, place

# What each handler validates its body with (order_api/handlers.py): the document must say the same.
HANDLER_BODIES = {("POST", "/api/orders"): "OrderIn", ("PUT", "/api/orders/{id}/status"): "StatusChangeIn"}


async def test_every_route_is_documented_once_and_nothing_else(client: CheckedClient) -> None:
    public, instance = documented_operations(OPENAPI_PATH), documented_operations(INSTANCE_DOCUMENT)
    assert not public & instance
    assert app_operations(client.app) == public | instance
    assert all(route.startswith("/api/") for _, route in public)


async def test_the_token_is_required_exactly_where_the_document_says(client: CheckedClient) -> None:
    await assert_auth_is_as_documented(client, OPENAPI_PATH)
    await assert_auth_is_as_documented(client, INSTANCE_DOCUMENT)


def test_the_schemas_are_what_the_models_generate() -> None:
    assert block_in(OPENAPI_PATH) == generated_block(OPENAPI_MODELS)


def test_each_body_and_query_is_the_handlers_model() -> None:
    document = load(OPENAPI_PATH)
    assert request_body_refs(document) == HANDLER_BODIES
    assert query_parameters(document, "GET", "/api/orders") == model_query_parameters(OrderListQuery)


def test_every_operation_has_an_id_a_summary_and_examples() -> None:
    document = load(OPENAPI_PATH)
    ids = []
    for item in document["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            ids.append(operation["operationId"])
            assert operation["summary"]
            body = operation.get("requestBody")
            if body:
                media = body["content"]["application/json"]
                assert "example" in media or "examples" in media, operation["operationId"]
            success = next(r for status, r in operation["responses"].items() if status.startswith("2"))
            for media in success.get("content", {}).values():
                assert "example" in media or "examples" in media, operation["operationId"]
    assert len(ids) == len(set(ids))


async def test_the_documents_are_served_as_yaml_and_json(client: CheckedClient) -> None:
    for prefix, path in (("/openapi", OPENAPI_PATH), ("/openapi/instance", INSTANCE_DOCUMENT)):
        as_yaml = await client.get(f"{prefix}.yaml")
        assert as_yaml.content_type == "application/yaml"
        assert yaml.safe_load(await as_yaml.text()) == load(path)
        as_json = await client.get(f"{prefix}.json")
        assert as_json.content_type == "application/json"
        assert json.loads(await as_json.text()) == load(path)


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
