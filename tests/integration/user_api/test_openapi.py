"""The OpenAPI documents are the contract: routes, schemas generated from the models, every answer.

Every response of every test is checked against the documents (CheckedClient); here, that the
documents describe the app's routes, and that their schemas are what the handlers' models
generate, so a constraint added to a model without `python -m common.openapi sync` fails.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.openapi import block_in, generated_block, load
from common.pagination import PageQuery
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
from user_api.routes import OPENAPI_PATH
from user_api.schemas import EMAIL_PATTERN, OPENAPI_MODELS
from user_api.service import normalise_email

# What each handler validates its body with (user_api/handlers.py): the document must say the same.
HANDLER_BODIES = {
    ("POST", "/api/auth/register"): "RegisterIn",
    ("POST", "/api/auth/login"): "LoginIn",
    ("POST", "/api/auth/refresh"): "RefreshIn",
    ("POST", "/api/auth/logout"): "LogoutIn",
    ("PUT", "/api/users/{id}"): "UserUpdateIn",
}


async def test_every_route_is_documented_once_and_nothing_else(client: CheckedClient) -> None:
    assert_routes_documented_once(client, OPENAPI_PATH)


async def test_the_token_is_required_exactly_where_the_document_says(client: CheckedClient) -> None:
    await assert_token_required_as_documented(client, OPENAPI_PATH)


def test_the_schemas_are_what_the_models_generate() -> None:
    assert block_in(OPENAPI_PATH) == generated_block(OPENAPI_MODELS)


def test_each_body_and_query_is_the_handlers_model() -> None:
    document = load(OPENAPI_PATH)
    assert request_body_refs(document) == HANDLER_BODIES
    assert query_parameters(document, "GET", "/api/users") == model_query_parameters(PageQuery)


def test_every_operation_has_an_id_a_summary_and_examples() -> None:
    assert_operations_described(OPENAPI_PATH)


async def test_the_documents_are_served_as_yaml_and_json(client: CheckedClient) -> None:
    await assert_documents_served(client, OPENAPI_PATH)


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


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.from_regex(EMAIL_PATTERN).filter(lambda email: len(email) <= 254))
def test_every_email_the_pattern_allows_passes_email_validator(email: str) -> None:
    # The schema's pattern is what clients and the fuzzer see; the service also normalises with
    # email-validator, which must never refuse what the pattern allows (a 422 the schema hides).
    normalise_email(email.strip())


@pytest.mark.parametrize(
    "email", ["a@b.test", "a@b.LOCALHOST", "a..b@example.com", "a@-b.com", "a@b", "ä@b.com"]
)
def test_the_email_pattern_refuses_what_email_validator_refuses(email: str) -> None:
    assert not re.search(EMAIL_PATTERN, email)
