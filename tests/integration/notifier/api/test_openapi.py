"""The OpenAPI documents are the contract: routes, schemas generated from the models, every answer.

Every response of every test is checked against the documents (CheckedClient); here, that the
documents describe the app's routes, and that their schemas are what the handlers' models
generate, so a constraint added to a model without `python -m common.openapi sync` fails.
"""

from __future__ import annotations

from common.openapi import block_in, generated_block, load
from notifier.routes import OPENAPI_PATH
from notifier.schemas import OPENAPI_MODELS, ListQuery
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

# What each handler validates its body with (notifier/handlers.py): the document must say the same.
HANDLER_BODIES = {
    ("POST", "/api/notifications/send"): "SendIn",
    ("POST", "/api/notifications/resend"): "ResendMatching",
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
    assert query_parameters(document, "GET", "/api/notifications") == model_query_parameters(ListQuery)


def test_every_operation_has_an_id_a_summary_and_examples() -> None:
    assert_operations_described(OPENAPI_PATH)


async def test_the_documents_are_served_as_yaml_and_json(client: CheckedClient) -> None:
    await assert_documents_served(client, OPENAPI_PATH)
