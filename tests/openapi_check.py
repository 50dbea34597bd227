"""Every response a test receives is checked against the service's OpenAPI document.

``CheckedClient`` wraps pytest-aiohttp's client: each call's status, media type and body must
be documented for that path and method, so the document cannot drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}


def load_spec(path: Path) -> OpenAPI:
    return OpenAPI.from_file_path(
        str(path),
        config=Config(
            extra_media_type_deserializers={
                "application/problem+json": json.loads,
                "application/yaml": yaml.safe_load,
                "text/plain": bytes.decode,
            }
        ),
    )


def documented_operations(path: Path) -> set[tuple[str, str]]:
    document = yaml.safe_load(path.read_text())
    return {
        (method.upper(), route)
        for route, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }


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
