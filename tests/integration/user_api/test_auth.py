"""Registration, login, refresh rotation and logout against real PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import asyncpg

from tests.conftest import pg_dsn
from tests.integration.user_api.conftest import PASSWORD, Account, unique_email
from tests.openapi_check import CheckedClient
from user_api.settings import Settings

NewAccount = Callable[..., Awaitable[Account]]


async def test_register_returns_user_without_hash_and_normalises_email(client: CheckedClient) -> None:
    email = unique_email().replace("user.", "Mixed.Case.")
    response = await client.post(
        "/api/auth/register",
        json={
            "email": f"  {email.upper()} ",
            "password": PASSWORD,
            "name": "Ada",
            "phone": "+44 7700 900123",
            "notification_preferences": {"sms": True},
        },
    )
    assert response.status == 201
    user = await response.json()
    assert user["email"] == email.lower()
    assert user["phone"] == "+447700900123"
    assert user["notification_preferences"] == {"email": True, "sms": True, "push": False}
    assert user["role"] == "user"
    assert "password" not in json.dumps(user)
    assert response.headers["Location"] == f"/api/users/{user['id']}"


async def test_password_is_bcrypt_cost_12(client: CheckedClient, settings: Settings) -> None:
    email = unique_email()
    await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "A"})
    conn = await asyncpg.connect(pg_dsn(settings.user_db_name))
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    finally:
        await conn.close()
    assert stored.startswith("$2b$12$")


async def test_register_writes_user_registered_to_the_outbox(
    client: CheckedClient, settings: Settings
) -> None:
    response = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": PASSWORD, "name": "Outboxed"}
    )
    user = await response.json()
    conn = await asyncpg.connect(pg_dsn(settings.user_db_name))
    try:
        row = await conn.fetchrow(
            "SELECT event_type, payload FROM outbox_events WHERE aggregate_id = $1", user["id"]
        )
    finally:
        await conn.close()
    assert row["event_type"] == "user.registered"
    event = json.loads(row["payload"])
    assert event["data"]["user"]["email"] == user["email"]
    assert event["data"]["user"]["notification_preferences"]["email"] is True


async def test_duplicate_email_is_conflict_case_insensitively(client: CheckedClient) -> None:
    email = unique_email()
    first = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "A"})
    assert first.status == 201
    second = await client.post(
        "/api/auth/register", json={"email": email.upper(), "password": PASSWORD, "name": "B"}
    )
    assert second.status == 409
    assert second.content_type == "application/problem+json"


async def test_mass_assignment_fields_in_register_are_rejected(client: CheckedClient) -> None:
    for extra in (
        {"role": "admin"},
        {"is_admin": True},
        {"password_hash": "x"},
        {"id": "00000000-0000-0000-0000-000000000000"},
    ):
        body = {"email": unique_email(), "password": PASSWORD, "name": "Mallory", **extra}
        response = await client.post("/api/auth/register", json=body)
        assert response.status == 422, extra
        problem = await response.json()
        assert problem["errors"][0]["field"] == next(iter(extra))


async def test_password_limits_are_counted_in_bytes(client: CheckedClient) -> None:
    # 19 four-byte emoji = 76 bytes but only 19 characters: over bcrypt's 72-byte limit.
    too_long = "\U0001f600" * 19
    response = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": too_long, "name": "A"}
    )
    assert response.status == 422
    assert "72 bytes" in (await response.json())["errors"][0]["message"]
    exactly_72 = "\U0001f600" * 18
    ok = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": exactly_72, "name": "A"}
    )
    assert ok.status == 201
    short = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": "1234567", "name": "A"}
    )
    assert short.status == 422


async def test_bad_bodies_get_the_right_problem_status(client: CheckedClient) -> None:
    malformed = await client.post(
        "/api/auth/register", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status == 400
    wrong_type = await client.post(
        "/api/auth/register", data=b"email=a", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status == 415
    huge = await client.post(
        "/api/auth/register", data=b"{" + b" " * 70_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert huge.status == 413
    not_object = await client.post("/api/auth/register", json=[1, 2])
    assert not_object.status == 422
    bad_email = await client.post(
        "/api/auth/register", json={"email": "nope", "password": PASSWORD, "name": "A"}
    )
    assert bad_email.status == 422
    bad_phone = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": PASSWORD, "name": "A", "phone": "12"}
    )
    assert bad_phone.status == 422
    # Valid JSON that PostgreSQL text cannot hold: found by schemathesis as a 500 once.
    nul = await client.post(
        "/api/auth/login",
        data=b'{"email": "\\u0000a@example.com", "password": "\\udbfcx"}',
        headers={"Content-Type": "application/json"},
    )
    assert nul.status == 422
    for response in (malformed, wrong_type, huge, not_object, bad_email, bad_phone, nul):
        assert response.content_type == "application/problem+json"


async def test_login_returns_tokens_and_wrong_password_is_401(
    client: CheckedClient, new_account: NewAccount
) -> None:
    account = await new_account()
    me = await client.get("/api/users/me", headers=account.auth)
    assert me.status == 200
    assert (await me.json())["id"] == account.id
    wrong = await client.post("/api/auth/login", json={"email": account.email, "password": "wrong password"})
    assert wrong.status == 401
    unknown = await client.post("/api/auth/login", json={"email": unique_email(), "password": PASSWORD})
    assert unknown.status == 401
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]


async def test_login_takes_as_long_for_unknown_email_as_for_wrong_password(
    client: CheckedClient, new_account: NewAccount
) -> None:
    account = await new_account()

    async def duration(email: str) -> float:
        started = time.perf_counter()
        response = await client.post("/api/auth/login", json={"email": email, "password": "not the password"})
        assert response.status == 401
        return time.perf_counter() - started

    known = sorted([await duration(account.email) for _ in range(3)])[1]
    unknown = sorted([await duration(unique_email()) for _ in range(3)])[1]
    # Without the dummy bcrypt check an unknown email answers in ~1 ms against ~200 ms.
    assert unknown > known * 0.5


async def test_refresh_rotates_and_reuse_revokes_the_session(
    client: CheckedClient, new_account: NewAccount
) -> None:
    account = await new_account()
    first = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status == 200
    rotated = await first.json()
    assert rotated["refresh_token"] != account.refresh_token
    new_auth = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert (await client.get("/api/users/me", headers=new_auth)).status == 200

    replay = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert replay.status == 401
    assert "revoked" in (await replay.json())["detail"]
    # The whole session is gone: the newest refresh token and its access token no longer work.
    after = await client.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status == 401
    assert (await client.get("/api/users/me", headers=new_auth)).status == 401


async def test_garbage_refresh_token_is_401(client: CheckedClient) -> None:
    for token in ("nonsense", "0000.abc", "6f1c0b4e-0000-4000-8000-000000000000.secret"):
        response = await client.post("/api/auth/refresh", json={"refresh_token": token})
        assert response.status == 401


async def test_logout_revokes_access_token_and_session(
    client: CheckedClient, new_account: NewAccount
) -> None:
    account = await new_account()
    out = await client.post("/api/auth/logout", headers=account.auth)
    assert out.status == 204
    assert (await client.get("/api/users/me", headers=account.auth)).status == 401
    refresh = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert refresh.status == 401
    again = await client.post("/api/auth/login", json={"email": account.email, "password": account.password})
    assert again.status == 200


async def test_login_rate_limit_per_email_gives_429_with_retry_after(
    client: CheckedClient, new_account: NewAccount, settings: Settings
) -> None:
    account = await new_account()
    statuses = []
    for _ in range(settings.login_max_attempts_per_email + 1):
        response = await client.post(
            "/api/auth/login", json={"email": account.email, "password": "wrong password"}
        )
        statuses.append(response.status)
    assert statuses[:-1] == [401] * settings.login_max_attempts_per_email
    assert statuses[-1] == 429
    assert 1 <= int(response.headers["Retry-After"]) <= settings.login_rate_window_s
    # Even the right password is refused while the window lasts.
    right = await client.post("/api/auth/login", json={"email": account.email, "password": account.password})
    assert right.status == 429
