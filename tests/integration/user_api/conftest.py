from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.openapi_check import CheckedClient, load_spec
from user_api.app import create_app
from user_api.routes import OPENAPI_PATH
from user_api.settings import Settings

SPEC = load_spec(OPENAPI_PATH)
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def users_db(database_factory: Callable[[str], str]) -> str:
    return database_factory("users")


@pytest.fixture
def settings(users_db: str, redis_flushed: int, jwt_keys: dict[str, str]) -> Settings:
    return Settings(
        app_env="test",
        user_db_name=users_db,
        redis_db=redis_flushed,
        outbox_relay_enabled=False,
        log_format="console",
        **jwt_keys,
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> CheckedClient:
    return CheckedClient(await aiohttp_client(create_app(settings)), SPEC)


@dataclass
class Account:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    body: dict[str, Any]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}@example.com"


async def register_and_login(client: CheckedClient, **fields: Any) -> Account:
    body = {"email": unique_email(), "password": PASSWORD, "name": "Test User", **fields}
    created = await client.post("/api/auth/register", json=body)
    assert created.status == 201, await created.text()
    user = await created.json()
    login = await client.post("/api/auth/login", json={"email": body["email"], "password": body["password"]})
    assert login.status == 200, await login.text()
    tokens = await login.json()
    return Account(
        user["id"], user["email"], body["password"], tokens["access_token"], tokens["refresh_token"], user
    )


@pytest.fixture
def new_account(client: CheckedClient) -> Callable[..., Awaitable[Account]]:
    async def make(**fields: Any) -> Account:
        return await register_and_login(client, **fields)

    return make


@pytest.fixture
async def admin(client: CheckedClient, settings: Settings) -> Account:
    from user_api.admin import create_admin

    email = unique_email("admin")
    assert await create_admin(settings, email, PASSWORD, "Admin") == 0
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200
    tokens = await login.json()
    return Account(
        tokens["user"]["id"], email, PASSWORD, tokens["access_token"], tokens["refresh_token"], tokens["user"]
    )


def app_of(client: CheckedClient) -> web.Application:
    return client.app
