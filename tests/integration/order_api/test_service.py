"""The rules of order_api through its HTTP API: totals, lifecycle, permissions, lists, idempotency.

Each test runs inside one transaction on a migrated database, rolled back at the end
(tests/integration/db.py): the app gets that connection through ``create_app(pool=)``, and the
test reads what was written through the same connection. Only the race between concurrent
requests needs real concurrent transactions; it has a database and a pool of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import REGISTRY

from order_api.app import create_app
from order_api.settings import Settings
from tests.conftest import pg_dsn
from tests.integration.db import RolledBackPool
from tests.integration.order_api.conftest import SPEC, StandInUserService, User, order_body, override, place
from tests.openapi_check import CheckedClient

NewUser = Callable[..., User]


@pytest.fixture
def orders_db(orders_migrated_db: str) -> str:
    # One migrated database for the module's tests; each test's changes are rolled back.
    return orders_migrated_db


@pytest.fixture
async def client(orders_tx: RolledBackPool, aiohttp_client: Any, settings: Settings) -> CheckedClient:
    # orders_tx first: the app is torn down before the transaction is rolled back.
    return CheckedClient(await aiohttp_client(create_app(settings, pool=cast(asyncpg.Pool, orders_tx))), SPEC)


@pytest.fixture
def db(orders_tx: RolledBackPool) -> RolledBackPool:
    return orders_tx


async def _db_fetch(db: RolledBackPool, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await db.fetch(sql, *args)


async def _events(db: RolledBackPool, order_id: str) -> list[dict[str, Any]]:
    rows = await _db_fetch(
        db,
        "SELECT payload::text AS payload FROM outbox_events WHERE aggregate_id = $1 ORDER BY id",
        order_id,
    )
    return [json.loads(row["payload"]) for row in rows]


async def _set_status(client: CheckedClient, user: User, order_id: str, status: str, **extra: Any) -> Any:
    return await client.put(
        f"/api/orders/{order_id}/status", json={"status": status, **extra}, headers=user.auth
    )


async def test_create_computes_exact_totals_and_stores_them(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool
) -> None:
    user = new_user()
    body = order_body(("A", 3, "0.10"), ("B", 1, "0.20"), ("C", 7, "19.99"))
    order = await place(client, user, body)
    assert order["status"] == "PENDING"
    assert order["user_id"] == user.id
    assert [i["line_total"] for i in order["items"]] == ["0.30", "0.20", "139.93"]
    assert order["total"] == "140.43"  # 0.1 * 3 + 0.2 in floats would be 0.5000000000000001
    stored = await _db_fetch(db, "SELECT total::text AS total FROM orders WHERE id = $1", order["id"])
    assert stored[0]["total"] == "140.43"


async def test_create_accepts_exact_json_numbers_and_normalises_them(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    raw = '{"currency": "USD", "items": [{"sku": "X", "name": "x", "quantity": 3, "unit_price": 0.1}]}'
    response = await client.post(
        "/api/orders", data=raw, headers={**user.auth, "Content-Type": "application/json"}
    )
    assert response.status == 201, await response.text()
    order = await response.json()
    assert order["items"][0]["unit_price"] == "0.10"
    assert order["total"] == "0.30"


async def test_create_returns_location_and_emits_order_created_with_contact(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool
) -> None:
    user = new_user()
    response = await client.post("/api/orders", json=order_body(), headers=user.auth)
    assert response.status == 201
    order = await response.json()
    assert response.headers["Location"] == f"/api/orders/{order['id']}"
    events = await _events(db, order["id"])
    assert [e["event_type"] for e in events] == ["order.created"]
    assert events[0]["data"]["order"] == order
    assert events[0]["producer"] == "order_api"
    assert events[0]["trace_id"] == response.headers["X-Request-ID"]
    assert events[0]["data"]["user"] == {
        "id": user.id,
        "email": user.contact["email"],
        "name": "Ada Lovelace",
        "phone": "+447700900123",
        "notification_preferences": {"email": True, "sms": False, "push": False},
        "push_token": None,
    }


async def test_get_returns_the_order_with_its_history(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    order = await place(client, user)
    response = await client.get(f"/api/orders/{order['id']}", headers=user.auth)
    assert response.status == 200
    detail = await response.json()
    assert {k: v for k, v in detail.items() if k != "history"} == order
    assert [(h["from_status"], h["to_status"], h["changed_by"]) for h in detail["history"]] == [
        (None, "PENDING", user.id)
    ]


async def test_unknown_order_is_404(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    response = await client.get("/api/orders/00000000-0000-4000-8000-000000000000", headers=user.auth)
    assert response.status == 404


async def test_owner_cancels_a_pending_order_and_it_emits_order_cancelled(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool
) -> None:
    user = new_user()
    order = await place(client, user)
    response = await client.delete(f"/api/orders/{order['id']}", headers=user.auth)
    assert response.status == 200
    assert (await response.json())["status"] == "CANCELLED"
    events = await _events(db, order["id"])
    assert [e["event_type"] for e in events] == ["order.created", "order.cancelled"]
    cancelled = events[1]["data"]
    assert (cancelled["from_status"], cancelled["to_status"], cancelled["changed_by"]) == (
        "PENDING",
        "CANCELLED",
        user.id,
    )
    assert cancelled["user"]["email"] == user.contact["email"]
    assert cancelled["order"]["status"] == "CANCELLED"


async def test_cancelling_twice_is_conflict(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    order = await place(client, user)
    assert (await client.delete(f"/api/orders/{order['id']}", headers=user.auth)).status == 200
    again = await client.delete(f"/api/orders/{order['id']}", headers=user.auth)
    assert again.status == 409
    assert again.content_type == "application/problem+json"


async def test_admin_walks_the_whole_lifecycle_with_history_and_events(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool
) -> None:
    user, admin = new_user(), new_user("admin")
    order = await place(client, user)
    for status in ("CONFIRMED", "SHIPPED", "DELIVERED"):
        response = await _set_status(client, admin, order["id"], status, reason=f"now {status}")
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == status
    detail = await (await client.get(f"/api/orders/{order['id']}", headers=user.auth)).json()
    assert [(h["from_status"], h["to_status"], h["changed_by"], h["reason"]) for h in detail["history"]] == [
        (None, "PENDING", user.id, "order placed"),
        ("PENDING", "CONFIRMED", admin.id, "now CONFIRMED"),
        ("CONFIRMED", "SHIPPED", admin.id, "now SHIPPED"),
        ("SHIPPED", "DELIVERED", admin.id, "now DELIVERED"),
    ]
    events = await _events(db, order["id"])
    assert [(e["event_type"], e["data"].get("to_status")) for e in events] == [
        ("order.created", None),
        ("order.status_changed", "CONFIRMED"),
        ("order.status_changed", "SHIPPED"),
        ("order.status_changed", "DELIVERED"),
    ]


def _transitions(from_status: str, to_status: str) -> float:
    labels = {"service": "order_api", "from_status": from_status, "to_status": to_status}
    return REGISTRY.get_sample_value("order_status_transitions_total", labels) or 0.0


async def test_committed_transitions_are_counted_and_refused_ones_are_not(
    client: CheckedClient, new_user: NewUser
) -> None:
    user, admin = new_user(), new_user("admin")
    order = await place(client, user)
    confirmed_before = _transitions("PENDING", "CONFIRMED")
    shipped_before = _transitions("PENDING", "SHIPPED")
    assert (await _set_status(client, admin, order["id"], "SHIPPED")).status == 409
    assert (await _set_status(client, admin, order["id"], "CONFIRMED")).status == 200
    assert _transitions("PENDING", "CONFIRMED") == confirmed_before + 1
    assert _transitions("PENDING", "SHIPPED") == shipped_before


async def test_illegal_transitions_are_conflicts_and_change_nothing(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool
) -> None:
    user, admin = new_user(), new_user("admin")
    order = await place(client, user)
    assert (await _set_status(client, admin, order["id"], "SHIPPED")).status == 409  # PENDING -> SHIPPED
    assert (await _set_status(client, admin, order["id"], "DELIVERED")).status == 409
    assert (await _set_status(client, admin, order["id"], "CONFIRMED")).status == 200
    assert (await _set_status(client, admin, order["id"], "CONFIRMED")).status == 409
    assert (await _set_status(client, admin, order["id"], "SHIPPED")).status == 200
    # Shipped: too late to cancel, for the owner and for an admin.
    assert (await client.delete(f"/api/orders/{order['id']}", headers=user.auth)).status == 409
    assert (await _set_status(client, admin, order["id"], "CANCELLED")).status == 409
    detail = await (await client.get(f"/api/orders/{order['id']}", headers=user.auth)).json()
    assert detail["status"] == "SHIPPED"
    assert len(detail["history"]) == 3
    assert len(await _events(db, order["id"])) == 3


async def test_owner_may_cancel_a_confirmed_order(client: CheckedClient, new_user: NewUser) -> None:
    user, admin = new_user(), new_user("admin")
    order = await place(client, user)
    assert (await _set_status(client, admin, order["id"], "CONFIRMED")).status == 200
    response = await _set_status(client, user, order["id"], "CANCELLED", reason="changed my mind")
    assert response.status == 200
    assert (await response.json())["status"] == "CANCELLED"


async def test_owner_cannot_make_admin_transitions(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    order = await place(client, user)
    for status in ("CONFIRMED", "SHIPPED", "DELIVERED"):
        response = await _set_status(client, user, order["id"], status)
        assert response.status == 403, status
    detail = await (await client.get(f"/api/orders/{order['id']}", headers=user.auth)).json()
    assert detail["status"] == "PENDING"


async def test_rejected_and_pending_cannot_be_set_through_the_api(
    client: CheckedClient, new_user: NewUser
) -> None:
    user, admin = new_user(), new_user("admin")
    order = await place(client, user)
    for status in ("REJECTED", "PENDING"):
        response = await _set_status(client, admin, order["id"], status)
        assert response.status == 422, status


async def test_another_user_sees_404_and_cannot_cancel_or_change(
    client: CheckedClient, new_user: NewUser
) -> None:
    owner, stranger = new_user(), new_user()
    order = await place(client, owner)
    path = f"/api/orders/{order['id']}"
    assert (await client.get(path, headers=stranger.auth)).status == 404
    assert (await client.delete(path, headers=stranger.auth)).status == 404
    assert (await _set_status(client, stranger, order["id"], "CANCELLED")).status == 404
    assert (await _set_status(client, stranger, order["id"], "SHIPPED")).status == 404
    detail = await (await client.get(path, headers=owner.auth)).json()
    assert detail["status"] == "PENDING"
    assert len(detail["history"]) == 1


async def test_admin_sees_and_cancels_anyones_order(client: CheckedClient, new_user: NewUser) -> None:
    owner, admin = new_user(), new_user("admin")
    order = await place(client, owner)
    assert (await client.get(f"/api/orders/{order['id']}", headers=admin.auth)).status == 200
    cancelled = await client.delete(f"/api/orders/{order['id']}", headers=admin.auth)
    assert cancelled.status == 200
    detail = await (await client.get(f"/api/orders/{order['id']}", headers=owner.auth)).json()
    assert detail["history"][-1]["changed_by"] == admin.id


async def test_list_shows_own_orders_newest_first_and_admin_sees_all(
    client: CheckedClient, new_user: NewUser
) -> None:
    alice, bob, admin = new_user(), new_user(), new_user("admin")
    alice_orders = [await place(client, alice) for _ in range(3)]
    bob_order = await place(client, bob)
    mine = await (await client.get("/api/orders", headers=alice.auth)).json()
    assert [o["id"] for o in mine["items"]] == [o["id"] for o in reversed(alice_orders)]
    assert mine["total"] == 3
    assert mine["items"][0]["items"] == alice_orders[-1]["items"]
    everyone = await (await client.get("/api/orders", headers=admin.auth)).json()
    assert everyone["total"] == 4
    assert everyone["items"][0]["id"] == bob_order["id"]


async def test_list_paginates(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    ids = [(await place(client, user))["id"] for _ in range(5)]
    newest_first = list(reversed(ids))
    first = await (await client.get("/api/orders", params={"limit": "2"}, headers=user.auth)).json()
    second = await (
        await client.get("/api/orders", params={"limit": "2", "offset": "2"}, headers=user.auth)
    ).json()
    past_end = await (await client.get("/api/orders", params={"offset": "10"}, headers=user.auth)).json()
    assert [o["id"] for o in first["items"]] == newest_first[:2]
    assert [o["id"] for o in second["items"]] == newest_first[2:4]
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert past_end["items"] == []
    assert past_end["total"] == 5


async def test_list_filters_by_status(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    keep, cancel = await place(client, user), await place(client, user)
    assert (await client.delete(f"/api/orders/{cancel['id']}", headers=user.auth)).status == 200
    cancelled = await (
        await client.get("/api/orders", params={"status": "CANCELLED"}, headers=user.auth)
    ).json()
    pending = await (await client.get("/api/orders", params={"status": "PENDING"}, headers=user.auth)).json()
    assert [o["id"] for o in cancelled["items"]] == [cancel["id"]]
    assert [o["id"] for o in pending["items"]] == [keep["id"]]
    assert pending["total"] == 1


async def test_list_rejects_bad_query_parameters(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    for params in ({"status": "LOST"}, {"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"sort": "id"}):
        response = await client.get("/api/orders", params=params, headers=user.auth)
        assert response.status == 422, params


async def test_idempotent_replay_returns_the_original_response_without_a_second_order(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool, user_service: StandInUserService
) -> None:
    user = new_user()
    headers = {**user.auth, "Idempotency-Key": "checkout-42"}
    first = await client.post("/api/orders", json=order_body(), headers=headers)
    first_body = await first.read()
    calls_after_first = user_service.calls
    replay = await client.post("/api/orders", json=order_body(), headers=headers)
    assert first.status == replay.status == 201
    assert await replay.read() == first_body
    assert replay.headers["Location"] == first.headers["Location"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert user_service.calls == calls_after_first  # a replay needs no user validation
    orders = await _db_fetch(db, "SELECT id FROM orders")
    assert len(orders) == 1
    events = await _db_fetch(db, "SELECT event_type FROM outbox_events")
    assert [e["event_type"] for e in events] == ["order.created"]


async def test_the_same_key_with_another_body_is_422(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    headers = {**user.auth, "Idempotency-Key": "checkout-43"}
    assert (await client.post("/api/orders", json=order_body(), headers=headers)).status == 201
    other = await client.post("/api/orders", json=order_body(("SKU-1", 3, "19.99")), headers=headers)
    assert other.status == 422
    assert "Idempotency-Key" in (await other.json())["detail"]


async def test_idempotency_keys_are_per_user(client: CheckedClient, new_user: NewUser) -> None:
    alice, bob = new_user(), new_user()
    first = await client.post(
        "/api/orders", json=order_body(), headers={**alice.auth, "Idempotency-Key": "k"}
    )
    second = await client.post("/api/orders", json=order_body(), headers={**bob.auth, "Idempotency-Key": "k"})
    assert first.status == second.status == 201
    assert (await first.json())["id"] != (await second.json())["id"]


async def test_concurrent_requests_with_one_key_create_one_order(
    aiohttp_client: Any, new_user: NewUser, settings: Settings, database_factory: Callable[[str], str]
) -> None:
    # Five transactions racing for one key: a pool and a database of its own, not the rollback.
    own = override(settings, order_db_name=database_factory("orders"))
    client = CheckedClient(await aiohttp_client(create_app(own)), SPEC)
    user = new_user()
    headers = {**user.auth, "Idempotency-Key": "double-click"}
    responses = await asyncio.gather(
        *(client.post("/api/orders", json=order_body(), headers=headers) for _ in range(5))
    )
    assert [r.status for r in responses] == [201] * 5
    assert len({(await r.json())["id"] for r in responses}) == 1
    conn = await asyncpg.connect(pg_dsn(own.order_db_name))
    try:
        assert len(await conn.fetch("SELECT id FROM orders")) == 1
        assert len(await conn.fetch("SELECT id FROM outbox_events")) == 1
    finally:
        await conn.close()


async def test_an_expired_key_starts_a_new_order(
    client: CheckedClient, new_user: NewUser, db: RolledBackPool
) -> None:
    user = new_user()
    headers = {**user.auth, "Idempotency-Key": "old-key"}
    first = await (await client.post("/api/orders", json=order_body(), headers=headers)).json()
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    again = await client.post("/api/orders", json=order_body(("SKU-9", 1, "1.00")), headers=headers)
    assert again.status == 201
    assert (await again.json())["id"] != first["id"]
    assert "Idempotent-Replayed" not in again.headers


async def test_expired_keys_are_purged(client: CheckedClient, new_user: NewUser, db: RolledBackPool) -> None:
    from order_api import service
    from order_api.state import DEPS

    user = new_user()
    for key in ("a", "b"):
        await client.post("/api/orders", json=order_body(), headers={**user.auth, "Idempotency-Key": key})
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE idem_key = 'a'"
    )
    assert await service.purge_expired_idempotency_keys(client.app[DEPS]) == 1
    remaining = await _db_fetch(db, "SELECT idem_key FROM idempotency_keys")
    assert [r["idem_key"] for r in remaining] == ["b"]


async def test_a_malformed_idempotency_key_is_422(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    for key in ("has space", "x" * 256, ""):
        response = await client.post(
            "/api/orders", json=order_body(), headers={**user.auth, "Idempotency-Key": key}
        )
        assert response.status == 422, key


async def test_a_user_the_user_service_does_not_know_cannot_order(
    client: CheckedClient, new_user: NewUser, user_service: StandInUserService, db: RolledBackPool
) -> None:
    user = new_user()
    del user_service.users[user.id]  # deleted in user_api, token not yet expired
    response = await client.post("/api/orders", json=order_body(), headers=user.auth)
    assert response.status == 422
    assert "cannot place orders" in (await response.json())["detail"]
    assert await _db_fetch(db, "SELECT id FROM orders") == []
