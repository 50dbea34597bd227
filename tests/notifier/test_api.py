"""The notification API: who may see and send what, validation, and queueing for the workers."""

from __future__ import annotations

import json
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
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.auth import revoked_jti_key
from common.jwt import ensure_dev_keypair, load_private_key
from common.settings import JwtSettings
from notifier import repository
from notifier.app import create_app
from notifier.routes import OPENAPI_PATH
from notifier.settings import NotifierSettings
from tests.notifier.helpers import free_port
from tests.openapi_check import CheckedClient, app_operations, documented_operations, load_spec

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


# --- the document ---------------------------------------------------------------------------


async def test_every_route_is_documented_and_nothing_else(client: CheckedClient) -> None:
    assert app_operations(client.app) == documented_operations(OPENAPI_PATH)


async def test_the_document_is_served(client: CheckedClient) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status == 200
    assert (await response.text()).startswith("openapi: 3.1")


async def test_readiness_names_database_redis_and_rabbitmq(client: CheckedClient) -> None:
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert set((await ready.json())["components"]) == {"postgresql", "redis", "rabbitmq"}


# --- sending --------------------------------------------------------------------------------


async def test_sending_needs_a_token_and_the_admin_role(client: CheckedClient, make_user: Any) -> None:
    body = {
        "channel": "email",
        "template": "announcement",
        "recipient": "a@example.com",
        "context": ANNOUNCEMENT,
    }
    assert (await client.post("/api/notifications/send", json=body)).status == 401
    response = await client.post("/api/notifications/send", json=body, headers=make_user().auth)
    assert response.status == 403


async def test_a_revoked_admin_token_is_refused(
    client: CheckedClient, mint: TokenMinter, redis_flushed: int
) -> None:
    token = mint(str(uuid.uuid4()), "admin")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    redis.Redis(db=redis_flushed).set(revoked_jti_key(jti), "1")
    body = {
        "channel": "email",
        "template": "announcement",
        "recipient": "a@example.com",
        "context": ANNOUNCEMENT,
    }

    response = await client.post(
        "/api/notifications/send", json=body, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status == 401


async def test_an_admin_send_is_accepted_and_queued_for_the_workers(
    client: CheckedClient, admin: Caller, deliver_queue: Any
) -> None:
    deliver_queue.queue_purge("notifications")
    body = {
        "channel": "email",
        "template": "announcement",
        "recipient": "ops@example.com",
        "context": ANNOUNCEMENT,
    }

    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)

    assert response.status == 202
    sent = await response.json()
    assert response.headers["Location"] == f"/api/notifications/{sent['id']}"
    assert (sent["status"], sent["recipient"], sent["user_id"], sent["attempts"]) == (
        "queued",
        "ops@example.com",
        None,
        0,
    )
    method, _, raw = deliver_queue.basic_get("notifications", auto_ack=True)
    assert method is not None
    message = json.loads(raw)
    assert (message["actor_name"], message["args"]) == ("notifications.deliver", [sent["id"]])
    assert message["options"]["trace_id"] == response.headers["X-Request-ID"]


async def test_a_send_by_user_id_looks_the_user_up_with_the_admins_token(
    client: CheckedClient,
    admin: Caller,
    user_service: tuple[StandInUserService, str],
    pool: asyncpg.Pool,
) -> None:
    service, _ = user_service
    user = service.add(
        phone="+15005550006", notification_preferences={"email": True, "sms": True, "push": False}
    )
    body = {"channel": "sms", "template": "announcement", "user_id": user["id"], "context": ANNOUNCEMENT}

    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)

    assert response.status == 202, await response.text()
    sent = await response.json()
    assert (sent["recipient"], sent["user_id"]) == ("+15005550006", user["id"])
    assert service.authorizations == [admin.auth["Authorization"]]
    row = await repository.get_notification(pool, sent["id"])
    assert row is not None
    assert repository.context_of(row)["user"]["name"] == "Grace Hopper"


@pytest.mark.parametrize(
    ("fields", "channel", "message"),
    [
        (
            {"phone": None, "notification_preferences": {"email": True, "sms": True, "push": False}},
            "sms",
            "no phone",
        ),
        ({"phone": "+15005550006"}, "sms", "has not enabled sms"),
        ({"notification_preferences": {"email": True, "sms": False, "push": True}}, "push", "no push token"),
    ],
)
async def test_a_user_without_that_channel_cannot_be_sent_to(
    client: CheckedClient,
    admin: Caller,
    user_service: tuple[StandInUserService, str],
    fields: dict[str, Any],
    channel: str,
    message: str,
) -> None:
    user = user_service[0].add(**fields)
    body = {"channel": channel, "template": "announcement", "user_id": user["id"], "context": ANNOUNCEMENT}

    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)

    assert response.status == 422
    assert message in (await response.json())["errors"][0]["message"]


async def test_an_unknown_user_is_422(client: CheckedClient, admin: Caller) -> None:
    body = {
        "channel": "email",
        "template": "announcement",
        "user_id": str(uuid.uuid4()),
        "context": ANNOUNCEMENT,
    }
    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)
    assert response.status == 422


async def test_the_user_service_being_down_is_503(
    aiohttp_client: Any, settings: NotifierSettings, admin: Caller
) -> None:
    down = settings.model_copy(update={"user_service_url": f"http://127.0.0.1:{free_port()}"})
    client = CheckedClient(await aiohttp_client(create_app(down)), SPEC)
    body = {
        "channel": "email",
        "template": "announcement",
        "user_id": str(uuid.uuid4()),
        "context": ANNOUNCEMENT,
    }

    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)

    assert response.status == 503


async def test_rabbitmq_down_is_503_and_the_notification_is_marked_failed(
    aiohttp_client: Any, settings: NotifierSettings, admin: Caller, pool: asyncpg.Pool
) -> None:
    down = settings.model_copy(update={"rabbitmq_port": free_port()})
    client = CheckedClient(await aiohttp_client(create_app(down)), SPEC)
    recipient = f"{uuid.uuid4().hex[:10]}@example.com"
    body = {"channel": "email", "template": "announcement", "recipient": recipient, "context": ANNOUNCEMENT}

    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)

    assert response.status == 503
    assert (await client.get("/health/ready")).status == 503
    row = await pool.fetchrow("SELECT status, last_error FROM notifications WHERE recipient = $1", recipient)
    assert row is not None
    assert row["status"] == "failed"
    assert row["last_error"].startswith("could not be queued")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": "announcement", "recipient": "a@example.com"}, "channel"),
        ({"channel": "fax", "template": "announcement", "recipient": "a@example.com"}, "channel"),
        ({"channel": "email", "template": "../../etc/passwd", "recipient": "a@example.com"}, "template"),
        (
            {
                "channel": "email",
                "template": "no.such",
                "recipient": "a@example.com",
                "context": ANNOUNCEMENT,
            },
            "template",
        ),
        ({"channel": "email", "template": "announcement", "context": ANNOUNCEMENT}, "body"),
        (
            {
                "channel": "email",
                "template": "announcement",
                "recipient": "not-an-email",
                "context": ANNOUNCEMENT,
            },
            "recipient",
        ),
        (
            {"channel": "sms", "template": "announcement", "recipient": "12345", "context": ANNOUNCEMENT},
            "recipient",
        ),
        (
            {"channel": "push", "template": "announcement", "recipient": "short", "context": ANNOUNCEMENT},
            "recipient",
        ),
        (
            {"channel": "email", "template": "announcement", "recipient": "a@example.com", "context": {}},
            "context",
        ),
        ({"channel": "email", "template": "announcement", "recipient": "a@example.com", "extra": 1}, "extra"),
        (
            {"channel": "email", "template": "announcement", "recipient": "a@example.com", "context": []},
            "context",
        ),
    ],
)
async def test_invalid_sends_are_422_naming_the_field(
    client: CheckedClient, admin: Caller, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)
    assert response.status == 422
    assert field in [error["field"] for error in (await response.json())["errors"]]


async def test_a_context_that_does_not_fit_the_template_says_why(
    client: CheckedClient, admin: Caller
) -> None:
    body = {
        "channel": "email",
        "template": "announcement",
        "recipient": "a@example.com",
        "context": {"subject": "x"},
    }
    response = await client.post("/api/notifications/send", json=body, headers=admin.auth)
    assert response.status == 422
    [error] = (await response.json())["errors"]
    assert "email/announcement.text.txt" in error["message"]
    assert "'message' is undefined" in error["message"]


async def test_a_body_that_is_not_json_is_400_and_another_media_type_415(
    client: CheckedClient, admin: Caller
) -> None:
    broken = await client.post(
        "/api/notifications/send",
        data=b"{not json",
        headers={**admin.auth, "Content-Type": "application/json"},
    )
    assert broken.status == 400
    form = await client.post("/api/notifications/send", data={"channel": "email"}, headers=admin.auth)
    assert form.status == 415


# --- reading --------------------------------------------------------------------------------


async def test_a_user_lists_only_their_own_notifications(
    client: CheckedClient, make_user: Any, pool: asyncpg.Pool
) -> None:
    ada, bob = make_user(), make_user()
    mine = {await seed(pool, ada.id), await seed(pool, ada.id, channel="sms")}
    await seed(pool, bob.id)

    response = await client.get("/api/notifications", headers=ada.auth)

    assert response.status == 200
    page = await response.json()
    assert {item["id"] for item in page["items"]} == mine
    assert page["total"] == 2
    forbidden = await client.get("/api/notifications", params={"user_id": bob.id}, headers=ada.auth)
    assert forbidden.status == 403


async def test_an_admin_lists_everyones_and_can_filter(
    client: CheckedClient, admin: Caller, make_user: Any, pool: asyncpg.Pool
) -> None:
    ada = make_user()
    sent_email = await seed(pool, ada.id, status="sent")
    await seed(pool, ada.id, status="failed")
    sent_sms = await seed(pool, ada.id, channel="sms", status="sent")
    other = await seed(pool, make_user().id)

    everyone = await (
        await client.get("/api/notifications", params={"limit": "100"}, headers=admin.auth)
    ).json()
    assert other in {item["id"] for item in everyone["items"]}
    assert everyone["total"] >= 4

    async def ids(**params: str) -> list[str]:
        response = await client.get(
            "/api/notifications", params={"user_id": ada.id, **params}, headers=admin.auth
        )
        assert response.status == 200
        return [item["id"] for item in (await response.json())["items"]]

    assert set(await ids(status="sent")) == {sent_email, sent_sms}
    assert await ids(status="sent", channel="sms") == [sent_sms]
    page = await (
        await client.get("/api/notifications", params={"user_id": ada.id, "limit": "1"}, headers=admin.auth)
    ).json()
    assert (len(page["items"]), page["total"]) == (1, 3)


@pytest.mark.parametrize(
    "params",
    [{"status": "lost"}, {"channel": "fax"}, {"limit": "0"}, {"offset": "-1"}, {"user_id": "x"}, {"x": "1"}],
)
async def test_bad_list_parameters_are_422(
    client: CheckedClient, admin: Caller, params: dict[str, str]
) -> None:
    response = await client.get("/api/notifications", params=params, headers=admin.auth)
    assert response.status == 422


async def test_a_notification_shows_every_attempt(
    client: CheckedClient, make_user: Any, pool: asyncpg.Pool
) -> None:
    ada = make_user()
    notification_id = await seed(pool, ada.id)
    async with pool.acquire() as conn:
        row = await repository.claim(conn, notification_id, lease_s=30, revive_dead=False)
        assert row is not None
        await repository.finish_attempt(conn, row, outcome="transient_error", error="SMTP 451 later")
        row = await repository.claim(conn, notification_id, lease_s=30, revive_dead=False)
        assert row is not None
        await repository.finish_attempt(conn, row, outcome="sent", provider_message_id="<m@x>")

    response = await client.get(f"/api/notifications/{notification_id}", headers=ada.auth)

    assert response.status == 200
    detail = await response.json()
    assert (detail["status"], detail["attempts"], detail["provider_message_id"]) == ("sent", 2, "<m@x>")
    assert [(a["attempt"], a["outcome"], a["error"]) for a in detail["attempt_log"]] == [
        (1, "transient_error", "SMTP 451 later"),
        (2, "sent", None),
    ]


async def test_someone_elses_notification_is_404_but_an_admin_sees_it(
    client: CheckedClient, make_user: Any, admin: Caller, pool: asyncpg.Pool
) -> None:
    notification_id = await seed(pool, make_user().id)
    assert (await client.get(f"/api/notifications/{notification_id}", headers=make_user().auth)).status == 404
    assert (await client.get(f"/api/notifications/{notification_id}", headers=admin.auth)).status == 200


@pytest.mark.parametrize("notification_id", [str(uuid.uuid4()), "-" * 36, "not-a-uuid"])
async def test_unknown_or_malformed_ids_are_404(
    client: CheckedClient, admin: Caller, notification_id: str
) -> None:
    response = await client.get(f"/api/notifications/{notification_id}", headers=admin.auth)
    assert response.status == 404


async def test_reading_needs_a_token(client: CheckedClient) -> None:
    assert (await client.get("/api/notifications")).status == 401
    assert (await client.get(f"/api/notifications/{uuid.uuid4()}")).status == 401
