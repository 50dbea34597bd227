"""Sending through the API: admin only, validated, queued for the workers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import jwt
import pytest
import redis

from common.revocation import revoked_jti_key
from notifier import repository
from notifier.app import create_app
from notifier.routes import OPENAPI_PATH
from notifier.settings import NotifierSettings
from tests.integration.notifier.api.conftest import (
    ANNOUNCEMENT,
    SPEC,
    Caller,
    StandInUserService,
    TokenMinter,
)
from tests.net import free_port
from tests.openapi_check import CheckedClient, app_operations, documented_operations

# --- the document ---------------------------------------------------------------------------


async def test_every_route_is_documented_and_nothing_else(client: CheckedClient) -> None:
    # The public document and the instance's own (common/openapi-instance.yaml).
    assert app_operations(client.app) == documented_operations(OPENAPI_PATH) | documented_operations()


async def test_the_document_is_served(client: CheckedClient) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status == 200
    assert (await response.text()).startswith("openapi: 3.1")


async def test_readiness_names_database_redis_rabbitmq_and_templates(client: CheckedClient) -> None:
    ready = await client.get("/health/ready")
    assert ready.status == 200
    body = await ready.json()
    assert set(body["components"]) == {"postgresql", "redis", "rabbitmq", "templates"}
    assert body["status"] == "UP"


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
