"""Every response a test receives is checked against the service's OpenAPI document.

``CheckedClient`` wraps pytest-aiohttp's client: each call's status, media type and body must
be documented for that path and method, so the document cannot drift from the code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from pydantic import BaseModel

from common.openapi import INSTANCE_DOCUMENT, load

UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}


def load_spec(path: Path) -> OpenAPI:
    """The document at ``path`` with the instance document's paths (both are the instance's answers)."""
    document = yaml.safe_load(path.read_text())
    instance = yaml.safe_load(INSTANCE_DOCUMENT.read_text())
    document["paths"].update(instance["paths"])
    for name, schema in instance["components"]["schemas"].items():
        document["components"]["schemas"].setdefault(name, schema)
    return OpenAPI.from_dict(
        document,
        config=Config(
            extra_media_type_deserializers={
                "application/problem+json": json.loads,
                "application/yaml": yaml.safe_load,
                "application/json": json.loads,
                "text/plain": bytes.decode,
            }
        ),
    )


def documented_operations(path: Path = INSTANCE_DOCUMENT) -> set[tuple[str, str]]:
    document = yaml.safe_load(path.read_text())
    return {
        (method.upper(), route)
        for route, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def request_body_refs(document: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the component schema its JSON request body refers to."""
    found = {}
    for route, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                found[(method.upper(), route)] = ref.removeprefix("#/components/schemas/")
    return found


def query_parameters(document: dict[str, Any], method: str, route: str) -> dict[str, Any]:
    """The query parameters of an operation (path-level ones too), by name, with their schemas."""
    item = document["paths"][route]
    parameters = [*item.get("parameters", []), *item[method.lower()].get("parameters", [])]
    resolved = (_resolve(document, p) for p in parameters)
    return {p["name"]: p["schema"] for p in resolved if p["in"] == "query"}


def model_query_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """What a query model accepts, as query parameters: an optional field is one left out, never null."""
    properties = model.model_json_schema(ref_template="#/components/schemas/{model}")["properties"]
    found = {}
    for name, schema in properties.items():
        schema = {k: v for k, v in schema.items() if k != "title"}
        options = [o for o in schema.pop("anyOf", []) if o != {"type": "null"}]
        if options:
            (only,) = options
            schema = {**only, **schema}
        if schema.get("default", 0) is None:
            del schema["default"]
        found[name] = schema
    return found


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    operations = set()
    for route in app.router.routes():
        if route.method in UNDOCUMENTED_METHODS or route.resource is None:
            continue
        # aiohttp's canonical form keeps regex constraints out: /api/users/{id}
        operations.add((route.method, route.resource.canonical))
    return operations


class CheckedClient:
    def __init__(self, client: TestClient[Any, Any], spec: OpenAPI) -> None:
        self.client = client
        self.spec = spec
        self.app = client.app

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        response = await self.client.request(method, path, **kwargs)
        body = await response.read()
        if response.status != 500:
            self._check(method, path, kwargs.get("params"), response, body)
        return response

    def _check(self, method: str, path: str, params: Any, response: ClientResponse, body: bytes) -> None:
        if response.status == 405:
            return  # aiohttp's own answer for an unrouted method; documented per operation is noise
        request = MockRequest("http://localhost", method.lower(), path.split("?")[0], args=params or {})
        mock = MockResponse(
            data=body,
            status_code=response.status,
            content_type=response.content_type if body else "application/json",
        )
        try:
            self.spec.validate_response(request, mock)
        except Exception as exc:  # show the whole story in the failure
            raise AssertionError(
                f"{method} {path} -> {response.status} {response.content_type} does not match the "
                f"OpenAPI document: {str(exc)[:800]}\nbody: {body[:500]!r}"
            ) from exc

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("DELETE", path, **kwargs)


async def assert_auth_is_as_documented(client: CheckedClient, path: Path) -> None:
    """Every operation that the document says needs the bearer token answers 401 without one and
    with a forged one; every operation it declares public (``security: []``) never asks for one.
    (schemathesis' ignored_auth checks the same through the gateway.)"""
    document = yaml.safe_load(path.read_text())
    default = document.get("security", [])
    forged = "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    for route, item in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", route)
        for method, operation in item.items():
            if method == "parameters":
                continue
            secured = bool(operation.get("security", default))
            for headers in ({}, {"Authorization": forged}):
                response = await client.request(method.upper(), concrete, headers=headers)
                if secured:
                    assert response.status == 401, f"{method.upper()} {route} without a valid token"
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                else:
                    assert response.status != 401, f"{method.upper()} {route} is documented as public"


# The contract tests every service runs on its own document (tests/*/test_openapi.py).


def assert_routes_documented_once(client: CheckedClient, path: Path) -> None:
    """Public and instance documents split the app's routes between them, and list nothing else."""
    public, instance = documented_operations(path), documented_operations(INSTANCE_DOCUMENT)
    assert not public & instance
    assert app_operations(client.app) == public | instance
    # The public document is what the gateway routes: the API, nothing of the instance's own.
    assert all(route.startswith("/api/") for _, route in public)


async def assert_token_required_as_documented(client: CheckedClient, path: Path) -> None:
    await assert_auth_is_as_documented(client, path)
    await assert_auth_is_as_documented(client, INSTANCE_DOCUMENT)


def assert_operations_described(path: Path) -> None:
    """Every operation has a unique operationId, a summary, and examples of its body and answer."""
    document = load(path)
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


async def assert_documents_served(client: CheckedClient, path: Path) -> None:
    """Both documents, as YAML and as JSON, are the files in the repository."""
    for prefix, document in (("/openapi", path), ("/openapi/instance", INSTANCE_DOCUMENT)):
        expected = load(document)
        as_yaml = await client.get(f"{prefix}.yaml")
        assert as_yaml.status == 200
        assert as_yaml.content_type == "application/yaml"
        assert yaml.safe_load(await as_yaml.text()) == expected
        as_json = await client.get(f"{prefix}.json")
        assert as_json.content_type == "application/json"
        assert json.loads(await as_json.text()) == expected
