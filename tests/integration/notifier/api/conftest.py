"""Fixtures for the notification API: tokens, a stand-in user service, the app under test."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.jwt import ensure_dev_keypair, load_private_key
from common.settings import JwtSettings
from notifier import repository
from notifier.app import create_app
from notifier.routes import OPENAPI_PATH
from notifier.settings import NotifierSettings
from tests.openapi_check import CheckedClient, load_spec

SPEC = load_spec(OPENAPI_PATH)


@dataclass
class TokenMinter:
    private_key: Ed25519PrivateKey
    issuer: str
    audience: str

    def __call__(self, user_id: str, role: str = "user") -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
            "role": role,
            "sid": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.private_key, algorithm="EdDSA")


@dataclass
class Caller:
    id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class StandInUserService:
    """``GET /api/users/{id}`` as user_api answers it (contract in docs/contracts.md)."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.authorizations: list[str | None] = []
        self.app = web.Application()
        self.app.router.add_get("/api/users/{id}", self._get)

    async def _get(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization"))
        user = self.users.get(request.match_info["id"])
        if user is None:
            return web.json_response({"title": "Not Found"}, status=404)
        return web.json_response(user)

    def add(self, **fields: Any) -> dict[str, Any]:
        user_id = str(uuid.uuid4())
        self.users[user_id] = {
            "id": user_id,
            "email": f"u.{user_id[:8]}@example.com",
            "name": "Grace Hopper",
            "phone": None,
            "role": "user",
            "notification_preferences": {"email": True, "sms": False, "push": False},
            "push_token": None,
            "created_at": "2026-11-25T19:00:00.000Z",
            "updated_at": "2026-11-25T19:00:00.000Z",
            **fields,
        }
        return self.users[user_id]


@pytest.fixture(scope="session")
def mint(jwt_keys: dict[str, str]) -> TokenMinter:
    settings = JwtSettings(**jwt_keys)
    ensure_dev_keypair(settings)
    return TokenMinter(
        load_private_key(settings, production=False), settings.jwt_issuer, settings.jwt_audience
    )


@pytest.fixture
async def user_service() -> AsyncIterator[tuple[StandInUserService, str]]:
    service = StandInUserService()
    server = TestServer(service.app, host="127.0.0.1")
    await server.start_server()
    yield service, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
def settings(
    notifications_db: str,
    redis_flushed: int,
    rabbitmq_vhost: str,
    jwt_keys: dict[str, str],
    templates_dir: Path,
    user_service: tuple[StandInUserService, str],
) -> NotifierSettings:
    return NotifierSettings(
        app_env="test",
        log_format="console",
        notification_db_name=notifications_db,
        redis_db=redis_flushed,
        rabbitmq_vhost=rabbitmq_vhost,
        templates_dir=templates_dir,
        user_service_url=user_service[1],
        **jwt_keys,
    )


@pytest.fixture
def deliver_queue(settings: NotifierSettings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    yield channel
    connection.close()


@pytest.fixture
async def client(aiohttp_client: Any, settings: NotifierSettings) -> CheckedClient:
    return CheckedClient(await aiohttp_client(create_app(settings)), SPEC)


@pytest.fixture
def admin(mint: TokenMinter) -> Caller:
    user_id = str(uuid.uuid4())
    return Caller(user_id, mint(user_id, "admin"))


@pytest.fixture
def make_user(mint: TokenMinter) -> Any:
    def make(user_id: str | None = None) -> Caller:
        user_id = user_id or str(uuid.uuid4())
        return Caller(user_id, mint(user_id))

    return make


async def seed(pool: asyncpg.Pool, user_id: str, *, channel: str = "email", status: str = "queued") -> str:
    notification_id = str(uuid.uuid4())
    await repository.insert_notification(
        pool,
        notification_id=notification_id,
        event_id=str(uuid.uuid4()),
        event_type="user.registered",
        template="user.registered",
        channel=channel,
        user_id=user_id,
        recipient="someone@example.com" if channel == "email" else "+447700900123",
        context={},
        trace_id="t",
    )
    await pool.execute("UPDATE notifications SET status = $2 WHERE id = $1", notification_id, status)
    return notification_id


ANNOUNCEMENT = {"subject": "Maintenance", "message": "Read-only on Sunday."}
