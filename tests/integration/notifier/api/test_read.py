"""Reading through the API: own notifications for users, everyone's for admins, every attempt.

Each test runs inside one transaction, rolled back at the end (tests/integration/db.py): the
app reads through ``create_app(pool=)`` what the test seeded on the same connection.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
import pytest

from notifier import repository
from notifier.app import create_app
from notifier.settings import NotifierSettings
from tests.integration.db import RolledBackPool
from tests.integration.notifier.api.conftest import SPEC, Caller, seed
from tests.openapi_check import CheckedClient


@pytest.fixture
def pool(notifications_tx: RolledBackPool) -> asyncpg.Pool:
    return cast(asyncpg.Pool, notifications_tx)


@pytest.fixture
async def client(
    notifications_tx: RolledBackPool, aiohttp_client: Any, settings: NotifierSettings
) -> CheckedClient:
    # notifications_tx first: the app is torn down before the transaction is rolled back.
    app = create_app(settings, pool=cast(asyncpg.Pool, notifications_tx))
    return CheckedClient(await aiohttp_client(app), SPEC)


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
    assert everyone["total"] == 4  # this test's alone: the others were rolled back

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
