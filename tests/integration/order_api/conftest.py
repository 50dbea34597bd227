"""Fixtures for order_api: a fresh orders database per test, tokens, and a user service.

Most tests talk to ``StandInUserService``: a small but real HTTP server that answers
``GET /api/users/{id}`` per docs/contracts.md (verifying the forwarded token like user_api does)
and that a test can stop, slow down or make fail — the boundary a circuit breaker is about.
``test_app.py`` runs the real user_api for the end-to-end flows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.jwt import ensure_dev_keypair, load_private_key, load_public_key
from common.settings import JwtSettings
from order_api.app import create_app
from order_api.routes import OPENAPI_PATH
from order_api.settings import Settings
from tests.net import free_port
from tests.openapi_check import CheckedClient, load_spec

SPEC = load_spec(OPENAPI_PATH)


@dataclass
class TokenMinter:
    private_key: Ed25519PrivateKey
    issuer: str
    audience: str

    def __call__(self, user_id: str, role: str = "user", *, ttl_s: int = 600) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
            "role": role,
            "sid": str(uuid.uuid4()),
            "typ": "access",
        }
        return jwt.encode(claims, self.private_key, algorithm="EdDSA")


@pytest.fixture(scope="session")
def mint_token(jwt_keys: dict[str, str]) -> TokenMinter:
    jwt_settings = JwtSettings(**jwt_keys)
    ensure_dev_keypair(jwt_settings)
    return TokenMinter(
        load_private_key(jwt_settings, production=False), jwt_settings.jwt_issuer, jwt_settings.jwt_audience
    )


@dataclass
class User:
    id: str
    token: str
    role: str = "user"
    contact: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class StandInUserService:
    """``GET /api/users/{id}`` as user_api answers it, on a port that survives stop/start."""

    def __init__(self, jwt_keys: dict[str, str]) -> None:
        jwt_settings = JwtSettings(**jwt_keys)
        self._public_key = load_public_key(jwt_settings, production=False)
        self._issuer = jwt_settings.jwt_issuer
        self._audience = jwt_settings.jwt_audience
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.users: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.delay_s = 0.0
        self.fail_with: int | None = None
        self.fail_next = 0  # answer 503 to this many calls, then behave
        self.last_authorization: str | None = None
        self._runner: web.AppRunner | None = None

    def add_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        user = {
            "id": user_id,
            "email": f"{user_id[:8]}@example.com",
            "name": "Ada Lovelace",
            "phone": "+447700900123",
            "role": "user",
            "notification_preferences": {"email": True, "sms": False, "push": False},
            "push_token": None,
            "created_at": "2026-11-25T19:00:00.000Z",
            "updated_at": "2026-11-25T19:00:00.000Z",
            **fields,
        }
        self.users[user_id] = user
        return user

    async def _get_user(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.last_authorization = request.headers.get("Authorization")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            return web.json_response({"title": "boom"}, status=self.fail_with)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"title": "warming up"}, status=503)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token, self._public_key, algorithms=["EdDSA"], issuer=self._issuer, audience=self._audience
            )
        except jwt.PyJWTError:
            return web.json_response({"title": "Unauthenticated"}, status=401)
        user_id = request.match_info["id"]
        if scheme.lower() != "bearer" or (claims["sub"] != user_id and claims["role"] != "admin"):
            return web.json_response({"title": "Not Found"}, status=404)
        user = self.users.get(user_id)
        if user is None:
            return web.json_response({"title": "Not Found"}, status=404)
        return web.json_response(user)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/users/{id}", self._get_user)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def user_service(jwt_keys: dict[str, str]) -> AsyncIterator[StandInUserService]:
    service = StandInUserService(jwt_keys)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def new_user(user_service: StandInUserService, mint_token: TokenMinter) -> Callable[..., User]:
    def make(role: str = "user", **fields: Any) -> User:
        user_id = str(uuid.uuid4())
        contact = user_service.add_user(user_id, role=role, **fields)
        return User(user_id, mint_token(user_id, role), role, contact)

    return make


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def orders_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this suite alone.

    The session's shared vhost also carries other suites' publishers and consumers (a notifier
    process, a Dramatiq worker); tests that count what reached a queue must not see theirs.
    """
    vhost = f"test_orders_{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        user = os.environ.get("RABBITMQ_USERNAME", "guest")
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot create a RabbitMQ vhost with rabbitmqctl: {exc}")
    yield vhost
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def orders_db(database_factory: Callable[[str], str]) -> str:
    return database_factory("orders")


@pytest.fixture
def settings(
    orders_db: str, redis_flushed: int, jwt_keys: dict[str, str], user_service: StandInUserService
) -> Settings:
    return Settings(
        app_env="test",
        order_db_name=orders_db,
        redis_db=redis_flushed,
        user_service_url=user_service.url,
        user_service_breaker_reset_s=1.0,
        outbox_relay_enabled=False,
        log_format="console",
        **jwt_keys,
    )


def override(settings: Settings, **changes: Any) -> Settings:
    """A copy with ``changes``. model_copy accepts any key silently; a typo here would point a
    relay at the wrong RabbitMQ vhost, so every key must be a real setting."""
    unknown = set(changes) - set(Settings.model_fields)
    assert not unknown, f"not settings: {sorted(unknown)}"
    return settings.model_copy(update=changes)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> CheckedClient:
    return CheckedClient(await aiohttp_client(create_app(settings)), SPEC)


def order_body(*items: tuple[str, int, str], currency: str = "EUR") -> dict[str, Any]:
    """A request body; items as (sku, quantity, unit_price)."""
    lines = items or (("SKU-1", 2, "19.99"),)
    return {
        "currency": currency,
        "items": [
            {"sku": sku, "name": f"Item {sku}", "quantity": quantity, "unit_price": price}
            for sku, quantity, price in lines
        ],
    }


async def place(client: CheckedClient, user: User, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post("/api/orders", json=body or order_body(), headers=user.auth)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created
