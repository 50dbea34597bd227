"""Resend: an admin puts a failed or dead notification back on the queue; it is still sent once."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from notifier import repository
from notifier.app import create_app
from notifier.delivery import DeliveryDeps, deliver
from notifier.fanout import fan_out
from notifier.settings import NotifierSettings
from tests.integration.notifier.api.conftest import SPEC, Caller, seed
from tests.integration.notifier.helpers import SmtpServer, order_created_event
from tests.integration.notifier.template_flow import place_orders
from tests.net import free_port
from tests.openapi_check import CheckedClient


def queued_ids(deliver_queue: Any) -> list[str]:
    ids = []
    while True:
        method, _, raw = deliver_queue.basic_get("notifications", auto_ack=True)
        if method is None:
            return ids
        ids.extend(json.loads(raw)["args"])


async def detail(client: CheckedClient, admin: Caller, notification_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/notifications/{notification_id}", headers=admin.auth)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_resending_a_failed_notification_sends_exactly_one_email(
    client: CheckedClient,
    admin: Caller,
    pool: asyncpg.Pool,
    deps: DeliveryDeps,
    smtp: SmtpServer,
    deliver_queue: Any,
) -> None:
    deliver_queue.queue_purge("notifications")
    smtp.handler.data_replies.append("550 5.7.1 message refused")  # the mailbox rejected it once
    [order] = await place_orders(pool, deps, 1)
    assert order.outcome == "failed"

    response = await client.post(f"/api/notifications/{order.notification_id}/resend", headers=admin.auth)

    assert response.status == 202
    assert response.headers["Location"] == f"/api/notifications/{order.notification_id}"
    body = await response.json()
    assert (body["status"], body["resends"]) == ("queued", 1)
    assert queued_ids(deliver_queue) == [order.notification_id]
    assert await deliver(deps, order.notification_id) == "sent"
    assert await deliver(deps, order.notification_id) == "sent"  # a duplicate message: nothing more
    [message] = smtp.handler.messages
    assert message["Message-ID"] == f"<{order.notification_id}@shop.test>"
    assert order.order_id in message["Subject"]
    row = await detail(client, admin, order.notification_id)
    assert row["status"] == "sent"
    assert [a["outcome"] for a in row["attempt_log"]] == ["permanent_error", "sent"]
    assert [a["attempt"] for a in row["attempt_log"]] == [1, 2]

    again = await client.post(f"/api/notifications/{order.notification_id}/resend", headers=admin.auth)
    assert again.status == 409
    assert "this one is sent" in (await again.json())["detail"]


async def test_a_dead_notification_is_resent_without_a_replay(
    client: CheckedClient, admin: Caller, pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    enqueued: list[str] = []

    async def enqueue(notification_id: str, trace_id: str | None) -> None:
        enqueued.append(notification_id)

    await fan_out(pool, order_created_event(), dispatch=enqueue)
    [notification_id] = enqueued
    assert await repository.mark_dead(pool, notification_id, "retries exhausted: test")

    response = await client.post(f"/api/notifications/{notification_id}/resend", headers=admin.auth)

    assert response.status == 202
    assert await deliver(deps, notification_id) == "sent"
    assert len(smtp.handler.with_message_id(f"<{notification_id}@shop.test>")) == 1


async def test_two_resends_at_once_make_one_resend(
    client: CheckedClient, admin: Caller, pool: asyncpg.Pool
) -> None:
    notification_id = await seed(pool, admin.id, status="failed")

    responses = await asyncio.gather(
        *(client.post(f"/api/notifications/{notification_id}/resend", headers=admin.auth) for _ in range(2))
    )

    assert sorted(r.status for r in responses) == [202, 409]
    assert (await detail(client, admin, notification_id))["resends"] == 1


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "held"])
async def test_only_failed_or_dead_notifications_can_be_resent(
    client: CheckedClient, admin: Caller, pool: asyncpg.Pool, status: str
) -> None:
    notification_id = await seed(pool, admin.id, status=status)

    response = await client.post(f"/api/notifications/{notification_id}/resend", headers=admin.auth)

    assert response.status == 409
    assert f"this one is {status}" in (await response.json())["detail"]


async def test_resending_needs_the_admin_role_and_an_existing_notification(
    client: CheckedClient, admin: Caller, make_user: Any, pool: asyncpg.Pool
) -> None:
    user = make_user()
    notification_id = await seed(pool, user.id, status="failed")
    path = f"/api/notifications/{notification_id}/resend"

    assert (await client.post(path)).status == 401
    assert (await client.post(path, headers=user.auth)).status == 403  # even one's own
    missing = await client.post(f"/api/notifications/{uuid.uuid4()}/resend", headers=admin.auth)
    assert missing.status == 404
    assert (await detail(client, admin, notification_id))["status"] == "failed"


async def test_when_the_queue_is_down_the_resend_is_a_503_and_nothing_changes(
    aiohttp_client: Any, settings: NotifierSettings, admin: Caller, pool: asyncpg.Pool
) -> None:
    no_broker = settings.model_copy(update={"rabbitmq_port": free_port()})
    client = CheckedClient(await aiohttp_client(create_app(no_broker)), SPEC)
    notification_id = await seed(pool, admin.id, status="dead")

    response = await client.post(f"/api/notifications/{notification_id}/resend", headers=admin.auth)

    assert response.status == 503
    assert "Retry-After" in response.headers
    row = await repository.get_notification(pool, notification_id)
    assert row is not None
    assert (row["status"], row["resends"]) == ("dead", 0)


# --- bulk -------------------------------------------------------------------------------------


async def seed_mix(pool: asyncpg.Pool, user_id: str) -> dict[str, str]:
    ids = {
        name: await seed(pool, user_id, status=name.split("-")[0])
        for name in ("failed-1", "failed-2", "dead-1", "sent-1", "failed-other")
    }
    await pool.execute(
        "UPDATE notifications SET template = 'announcement' WHERE id = $1", ids["failed-other"]
    )
    return ids


async def test_bulk_resend_by_template_status_and_time_range(
    client: CheckedClient, admin: Caller, pool: asyncpg.Pool, deliver_queue: Any
) -> None:
    deliver_queue.queue_purge("notifications")
    since: datetime = await pool.fetchval("SELECT now()")
    ids = await seed_mix(pool, admin.id)
    body = {
        "status": ["failed", "dead"],
        "template": "user.registered",
        "created_from": since.isoformat(),
        "created_to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
    }
    expected = [ids["failed-1"], ids["failed-2"], ids["dead-1"]]  # oldest first

    dry = await client.post("/api/notifications/resend", json={**body, "dry_run": True}, headers=admin.auth)
    assert dry.status == 200
    assert await dry.json() == {"dry_run": True, "count": 3, "ids": expected}
    assert queued_ids(deliver_queue) == []

    response = await client.post("/api/notifications/resend", json=body, headers=admin.auth)

    assert response.status == 202
    assert await response.json() == {"dry_run": False, "count": 3, "ids": expected}
    assert queued_ids(deliver_queue) == expected
    statuses = {name: (await detail(client, admin, i))["status"] for name, i in ids.items()}
    assert statuses == {
        "failed-1": "queued",
        "failed-2": "queued",
        "dead-1": "queued",
        "sent-1": "sent",
        "failed-other": "failed",
    }
    again = await client.post("/api/notifications/resend", json=body, headers=admin.auth)
    assert await again.json() == {"dry_run": False, "count": 0, "ids": []}


async def test_bulk_resend_takes_the_oldest_up_to_the_limit(
    client: CheckedClient, admin: Caller, pool: asyncpg.Pool
) -> None:
    since: datetime = await pool.fetchval("SELECT now()")
    ids = await seed_mix(pool, admin.id)
    body = {"status": ["failed"], "created_from": since.isoformat(), "limit": 2, "channel": "email"}

    response = await client.post("/api/notifications/resend", json=body, headers=admin.auth)

    assert (await response.json())["ids"] == [ids["failed-1"], ids["failed-2"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "status"),
        ({"status": []}, "status"),
        ({"status": ["sent"]}, "status.0"),
        ({"status": ["failed"], "created_from": "2026-11-25T19:00:00"}, "created_from"),
        (
            {
                "status": ["failed"],
                "created_from": "2026-11-25T20:00:00Z",
                "created_to": "2026-11-25T19:00:00Z",
            },
            "body",
        ),
        # Valid times that no datetime holds in UTC (year 0, year 10000): 422, not a 500.
        ({"status": ["failed"], "created_from": "0001-01-01T00:00:00+14:00"}, "created_from"),
        ({"status": ["failed"], "created_to": "9999-12-31T23:59:59-14:00"}, "created_to"),
        ({"status": ["failed"], "limit": 0}, "limit"),
        ({"status": ["failed"], "limit": 1001}, "limit"),
        ({"status": ["failed"], "template": "../x"}, "template"),
        ({"status": ["failed"], "everything": True}, "everything"),
    ],
)
async def test_bulk_resend_refuses_a_bad_filter_with_422(
    client: CheckedClient, admin: Caller, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/notifications/resend", json=body, headers=admin.auth)

    assert response.status == 422
    assert field in {error["field"] for error in (await response.json())["errors"]}


async def test_bulk_resend_needs_the_admin_role(client: CheckedClient, make_user: Any) -> None:
    body = {"status": ["failed"]}
    assert (await client.post("/api/notifications/resend", json=body)).status == 401
    response = await client.post("/api/notifications/resend", json=body, headers=make_user().auth)
    assert response.status == 403
