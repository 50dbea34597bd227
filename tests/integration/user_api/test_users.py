"""Users CRUD, object-level authorization, mass assignment, cache invalidation.

Each test runs inside one transaction, rolled back at the end (tests/integration/db.py): the
app gets it through ``create_app(pool=)``, and the admin is made through the app's own deps, so
nothing a test writes outlives it (the session's shared users database is never touched).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import pytest
import redis

from tests.integration.db import RolledBackPool
from tests.integration.user_api.conftest import PASSWORD, SPEC, Account, unique_email
from tests.openapi_check import CheckedClient
from user_api import service
from user_api.app import create_app
from user_api.settings import Settings
from user_api.state import DEPS

NewAccount = Callable[..., Awaitable[Account]]


@pytest.fixture
async def client(users_tx: RolledBackPool, aiohttp_client: Any, settings: Settings) -> CheckedClient:
    # users_tx first: the app is torn down before the transaction is rolled back.
    return CheckedClient(await aiohttp_client(create_app(settings, pool=cast(asyncpg.Pool, users_tx))), SPEC)


@pytest.fixture
async def admin(client: CheckedClient) -> Account:
    email = unique_email("admin")
    await service.create_admin(client.app[DEPS], email, PASSWORD, "Admin")
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200
    tokens = await login.json()
    return Account(
        tokens["user"]["id"], email, PASSWORD, tokens["access_token"], tokens["refresh_token"], tokens["user"]
    )


async def test_list_users_is_admin_only_and_paginated_with_total(
    client: CheckedClient, new_account: NewAccount, admin: Account
) -> None:
    user = await new_account()
    forbidden = await client.get("/api/users", headers=user.auth)
    assert forbidden.status == 403
    for _ in range(3):
        await new_account()
    page = await client.get("/api/users", params={"limit": "2", "offset": "1"}, headers=admin.auth)
    assert page.status == 200
    body = await page.json()
    assert body["limit"] == 2
    assert body["offset"] == 1
    assert len(body["items"]) == 2
    assert body["total"] == 5  # this test's users alone: the others were rolled back
    everyone = await client.get("/api/users", params={"limit": "100"}, headers=admin.auth)
    ids = [u["id"] for u in (await everyone.json())["items"]]
    assert user.id in ids
    assert admin.id in ids
    bad = await client.get("/api/users", params={"limit": "0"}, headers=admin.auth)
    assert bad.status == 422
    unknown = await client.get("/api/users", params={"sort": "x"}, headers=admin.auth)
    assert unknown.status == 422
    repeated = await client.get("/api/users?offset=1&offset=2", headers=admin.auth)
    assert repeated.status == 422


async def test_unauthenticated_requests_are_401(client: CheckedClient) -> None:
    for path in ("/api/users", "/api/users/me", "/api/users/00000000-0000-4000-8000-000000000000"):
        response = await client.get(path)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_user_b_cannot_read_change_or_delete_user_a(
    client: CheckedClient, new_account: NewAccount
) -> None:
    alice, bob = await new_account(), await new_account()
    path = f"/api/users/{alice.id}"
    assert (await client.get(path, headers=bob.auth)).status == 404
    assert (await client.put(path, json={"name": "pwned"}, headers=bob.auth)).status == 404
    assert (await client.delete(path, headers=bob.auth)).status == 404
    mine = await client.get(path, headers=alice.auth)
    assert (await mine.json())["name"] == "Test User"


async def test_admin_can_read_update_and_delete_anyone(
    client: CheckedClient, new_account: NewAccount, admin: Account
) -> None:
    user = await new_account()
    path = f"/api/users/{user.id}"
    assert (await client.get(path, headers=admin.auth)).status == 200
    changed = await client.put(path, json={"name": "Renamed by admin", "role": "admin"}, headers=admin.auth)
    assert changed.status == 200
    assert (await changed.json())["role"] == "admin"
    assert (await client.delete(path, headers=admin.auth)).status == 204
    assert (await client.get(path, headers=admin.auth)).status == 404


async def test_only_an_admin_may_change_a_role(client: CheckedClient, new_account: NewAccount) -> None:
    user = await new_account()
    path = f"/api/users/{user.id}"
    escalation = await client.put(path, json={"role": "admin"}, headers=user.auth)
    assert escalation.status == 403
    same = await client.put(path, json={"role": "user", "name": "Still me"}, headers=user.auth)
    assert same.status == 200
    assert (await (await client.get(path, headers=user.auth)).json())["role"] == "user"


async def test_mass_assignment_in_put_changes_nothing(client: CheckedClient, new_account: NewAccount) -> None:
    user = await new_account()
    path = f"/api/users/{user.id}"
    for extra in (
        {"is_admin": True},
        {"password_hash": "$2b$04$x"},
        {"id": "00000000-0000-4000-8000-000000000000"},
    ):
        response = await client.put(path, json={"name": "Sneaky", **extra}, headers=user.auth)
        assert response.status == 422, extra
    after = await (await client.get(path, headers=user.auth)).json()
    assert after["name"] == "Test User"
    assert after["role"] == "user"
    assert after["id"] == user.id
    login = await client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert login.status == 200


async def test_user_updates_phone_preferences_and_push_token(
    client: CheckedClient, new_account: NewAccount
) -> None:
    user = await new_account()
    path = f"/api/users/{user.id}"
    response = await client.put(
        path,
        json={
            "phone": "+1 (555) 010-0199",
            "push_token": "fcm-device-token-0123456789",
            "notification_preferences": {"sms": True, "push": True},
        },
        headers=user.auth,
    )
    assert response.status == 200
    body = await response.json()
    assert body["phone"] == "+15550100199"
    assert body["push_token"] == "fcm-device-token-0123456789"
    assert body["notification_preferences"] == {"email": True, "sms": True, "push": True}
    cleared = await client.put(path, json={"phone": None, "push_token": None}, headers=user.auth)
    assert (await cleared.json())["phone"] is None
    assert (await cleared.json())["push_token"] is None
    empty_name = await client.put(path, json={"name": None}, headers=user.auth)
    assert empty_name.status == 422


async def test_password_change_needs_the_current_password(
    client: CheckedClient, new_account: NewAccount
) -> None:
    user = await new_account()
    path = f"/api/users/{user.id}"
    refused = await client.put(path, json={"password": "a new password"}, headers=user.auth)
    assert refused.status == 403
    wrong = await client.put(
        path, json={"password": "a new password", "current_password": "nope"}, headers=user.auth
    )
    assert wrong.status == 403
    ok = await client.put(
        path, json={"password": "a new password", "current_password": PASSWORD}, headers=user.auth
    )
    assert ok.status == 200
    # Changing the password ends the other sessions, including the one that made the change.
    assert (await client.get("/api/users/me", headers=user.auth)).status == 401
    login = await client.post("/api/auth/login", json={"email": user.email, "password": "a new password"})
    assert login.status == 200


async def test_email_change_to_a_taken_address_is_conflict(
    client: CheckedClient, new_account: NewAccount
) -> None:
    alice, bob = await new_account(), await new_account()
    response = await client.put(f"/api/users/{bob.id}", json={"email": alice.email.upper()}, headers=bob.auth)
    assert response.status == 409


async def test_deleting_a_user_revokes_their_sessions(client: CheckedClient, new_account: NewAccount) -> None:
    user = await new_account()
    second_login = await client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    other_session = await second_login.json()
    assert (await client.delete(f"/api/users/{user.id}", headers=user.auth)).status == 204
    for token in (user.access_token, other_session["access_token"]):
        assert (await client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})).status == 401
    refresh = await client.post("/api/auth/refresh", json={"refresh_token": other_session["refresh_token"]})
    assert refresh.status == 401
    login = await client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert login.status == 401
    # The address is free again for a new account.
    again = await client.post(
        "/api/auth/register", json={"email": user.email, "password": PASSWORD, "name": "New"}
    )
    assert again.status == 201


async def test_get_user_is_cached_and_the_cache_is_invalidated_on_update_and_delete(
    client: CheckedClient, new_account: NewAccount, settings: Settings
) -> None:
    user = await new_account()
    path = f"/api/users/{user.id}"
    key = f"cache:user:{user.id}"
    store = redis.Redis(port=settings.redis_port, db=settings.redis_db, decode_responses=True)
    try:
        assert (await client.get(path, headers=user.auth)).status == 200
        assert json.loads(store.get(key) or "{}")["name"] == "Test User"
        # Served from the cache: a value planted there is what comes back.
        planted = json.loads(store.get(key) or "{}") | {"name": "From cache"}
        store.set(key, json.dumps(planted))
        assert (await (await client.get(path, headers=user.auth)).json())["name"] == "From cache"
        await client.put(path, json={"name": "Fresh"}, headers=user.auth)
        assert store.get(key) is None
        assert (await (await client.get(path, headers=user.auth)).json())["name"] == "Fresh"
        await client.delete(path, headers=user.auth)
        assert store.get(key) is None
    finally:
        store.close()


async def test_malformed_ids_and_unknown_routes_are_problem_404(
    client: CheckedClient, new_account: NewAccount
) -> None:
    user = await new_account()
    for path in ("/api/users/not-a-uuid", "/api/nowhere"):
        response = await client.client.get(path, headers=user.auth)
        assert response.status == 404
        assert response.content_type == "application/problem+json"
    gone = await client.get("/api/users/00000000-0000-4000-8000-000000000000", headers=user.auth)
    assert gone.status == 404
