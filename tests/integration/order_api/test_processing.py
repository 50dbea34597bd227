"""order_api.lifecycle: the orders.process rule, its history and event, and redelivery."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common.contexts import PG_POOL
from common.errors import NotFound
from order_api import repository
from order_api.lifecycle import process_order_created
from tests.integration.order_api.conftest import User, order_body, place
from tests.openapi_check import CheckedClient

NewUser = Callable[..., User]
LIMIT = Decimal("100.00")


async def _events(client: CheckedClient, order_id: str) -> list[dict[str, Any]]:
    rows = await client.app[PG_POOL].fetch(
        "SELECT payload::text AS payload FROM outbox_events WHERE aggregate_id = $1 ORDER BY id", order_id
    )
    return [json.loads(row["payload"]) for row in rows]


async def _created_event(client: CheckedClient, user: User, price: str) -> dict[str, Any]:
    order = await place(client, user, order_body(("SKU-1", 1, price)))
    events = await _events(client, order["id"])
    assert events[0]["event_type"] == "order.created"
    # What the actor receives has been through JSON: a plain dict.
    return copy.deepcopy(events[0])


async def _history(client: CheckedClient, user: User, order_id: str) -> list[dict[str, Any]]:
    detail = await (await client.get(f"/api/orders/{order_id}", headers=user.auth)).json()
    history: list[dict[str, Any]] = detail["history"]
    return history


async def test_an_order_within_the_limit_is_confirmed_with_history_and_event(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    created = await _created_event(client, user, "100.00")  # equal to the limit: still fine
    order_id = created["data"]["order"]["id"]
    pool = client.app[PG_POOL]
    assert (await process_order_created(pool, created, max_order_total=LIMIT)).status == "CONFIRMED"
    last = (await _history(client, user, order_id))[-1]
    assert (last["from_status"], last["to_status"], last["changed_by"]) == (
        "PENDING",
        "CONFIRMED",
        "orders.process",
    )
    events = await _events(client, order_id)
    assert [e["event_type"] for e in events] == ["order.created", "order.status_changed"]
    changed = events[1]
    assert changed["trace_id"] == created["trace_id"]
    assert changed["data"]["from_status"] == "PENDING"
    assert changed["data"]["to_status"] == "CONFIRMED"
    assert changed["data"]["changed_by"] == "orders.process"
    assert changed["data"]["user"] == created["data"]["user"]
    assert changed["data"]["order"]["status"] == "CONFIRMED"


async def test_an_order_above_the_limit_is_rejected_with_the_reason(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    created = await _created_event(client, user, "100.01")
    order_id = created["data"]["order"]["id"]
    assert (
        await process_order_created(client.app[PG_POOL], created, max_order_total=LIMIT)
    ).status == "REJECTED"
    last = (await _history(client, user, order_id))[-1]
    assert last["to_status"] == "REJECTED"
    assert last["reason"] == "order total 100.01 EUR exceeds the limit of 100.00"
    events = await _events(client, order_id)
    assert events[-1]["data"]["to_status"] == "REJECTED"
    assert events[-1]["data"]["reason"] == last["reason"]


async def test_redelivery_changes_nothing_twice(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    created = await _created_event(client, user, "5.00")
    order_id = created["data"]["order"]["id"]
    pool = client.app[PG_POOL]
    labels = {"service": "order_api", "from_status": "PENDING", "to_status": "CONFIRMED"}
    counted_before = REGISTRY.get_sample_value("order_status_transitions_total", labels) or 0.0
    assert (await process_order_created(pool, created, max_order_total=LIMIT)).status == "CONFIRMED"
    assert (await process_order_created(pool, created, max_order_total=LIMIT)).status == "CONFIRMED"
    assert REGISTRY.get_sample_value("order_status_transitions_total", labels) == counted_before + 1
    assert len(await _history(client, user, order_id)) == 2
    assert len(await _events(client, order_id)) == 2


async def test_concurrent_deliveries_process_once(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    created = await _created_event(client, user, "5.00")
    pool = client.app[PG_POOL]
    results = await asyncio.gather(
        *(process_order_created(pool, created, max_order_total=LIMIT) for _ in range(4))
    )
    assert [result.status for result in results] == ["CONFIRMED"] * 4
    assert len(await _events(client, created["data"]["order"]["id"])) == 2


async def test_an_order_cancelled_before_processing_stays_cancelled(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    created = await _created_event(client, user, "5.00")
    order_id = created["data"]["order"]["id"]
    assert (await client.delete(f"/api/orders/{order_id}", headers=user.auth)).status == 200
    assert (
        await process_order_created(client.app[PG_POOL], created, max_order_total=LIMIT)
    ).status == "CANCELLED"
    assert [e["event_type"] for e in await _events(client, order_id)] == ["order.created", "order.cancelled"]


async def test_an_order_its_owner_cancels_while_it_is_being_decided_stays_cancelled(
    client: CheckedClient, new_user: NewUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = new_user()
    created = await _created_event(client, user, "5.00")
    order_id = created["data"]["order"]["id"]
    decide = repository.decide_pending
    cancelled: list[int] = []

    async def cancel_then_decide(db: Any, decision: Any) -> bool:
        if not cancelled:  # the owner's DELETE lands between the decision and its write
            cancelled.append((await client.delete(f"/api/orders/{order_id}", headers=user.auth)).status)
        return await decide(db, decision)

    monkeypatch.setattr(repository, "decide_pending", cancel_then_decide)
    processed = await process_order_created(client.app[PG_POOL], created, max_order_total=LIMIT)
    assert (cancelled, processed.status) == ([200], "CANCELLED")
    monkeypatch.undo()
    assert [e["event_type"] for e in await _events(client, order_id)] == ["order.created", "order.cancelled"]
    assert [h["to_status"] for h in await _history(client, user, order_id)] == ["PENDING", "CANCELLED"]


async def test_an_order_cancelled_between_its_read_and_its_decision_stays_cancelled(
    client: CheckedClient, new_user: NewUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = new_user()
    created = await _created_event(client, user, "5.00")
    order_id = created["data"]["order"]["id"]
    del created["data"]["user"]  # an event that does not carry the order whole: it is read
    read = repository.get_order_detail
    cancelled: list[int] = []

    async def read_then_cancel(db: Any, wanted: str) -> Any:
        detail = await read(db, wanted)
        if not cancelled:  # the owner's DELETE lands between the read and the decision
            cancelled.append((await client.delete(f"/api/orders/{order_id}", headers=user.auth)).status)
        return detail

    monkeypatch.setattr(repository, "get_order_detail", read_then_cancel)
    processed = await process_order_created(client.app[PG_POOL], created, max_order_total=LIMIT)
    assert (cancelled, processed.status) == ([200], "CANCELLED")
    monkeypatch.undo()
    assert [h["to_status"] for h in await _history(client, user, order_id)] == ["PENDING", "CANCELLED"]


class CountingPool:
    """The pool, counting the statements sent through it."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.pool, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute"):
            return method

        async def counted(*args: Any) -> Any:
            self.statements += 1
            return await method(*args)

        return counted


async def test_a_pending_order_is_decided_from_its_event_in_one_statement(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    created = await _created_event(client, user, "5.00")
    counting = CountingPool(client.app[PG_POOL])

    processed = await process_order_created(counting, created, max_order_total=LIMIT, hold_s=60)

    assert (processed.status, counting.statements) == ("CONFIRMED", 1)
    [changed] = processed.held_events
    stored = (await _events(client, created["data"]["order"]["id"]))[-1]
    assert changed == stored
    assert changed["data"]["order"]["status"] == "CONFIRMED"
    assert changed["data"]["order"]["items"] == created["data"]["order"]["items"]
    assert changed["data"]["user"] == created["data"]["user"]


async def test_processing_the_limit_applies_to_the_stored_total_not_the_event(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    created = await _created_event(client, user, "500.00")
    created["data"]["order"]["total"] = "1.00"  # a tampered or stale event must not decide
    assert (
        await process_order_created(client.app[PG_POOL], created, max_order_total=LIMIT)
    ).status == "REJECTED"


async def test_malformed_events_and_unknown_orders_are_permanent_errors(client: CheckedClient) -> None:
    pool = client.app[PG_POOL]
    with pytest.raises(ValueError, match=r"order\.created"):
        await process_order_created(
            pool, {"event_type": "user.registered", "data": {}}, max_order_total=LIMIT
        )
    with pytest.raises(ValueError, match=r"order\.id"):
        await process_order_created(
            pool, {"event_type": "order.created", "data": {"order": {"id": "x"}}}, max_order_total=LIMIT
        )
    unknown = {
        "event_type": "order.created",
        "data": {"order": {"id": "00000000-0000-4000-8000-000000000000"}},
    }
    with pytest.raises(NotFound):
        await process_order_created(pool, unknown, max_order_total=LIMIT)
