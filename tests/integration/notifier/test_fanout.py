"""Fan-out: one notification per enabled channel, exactly once per (event, channel)."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest

from notifier import repository
from notifier.fanout import InvalidEvent, fan_out, fan_out_all
from tests.integration.notifier.helpers import contact, order_created_event, user_registered_event


class Recorder:
    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.trace_ids: list[str | None] = []

    async def __call__(self, notification_id: str, trace_id: str | None) -> None:
        self.enqueued.append(notification_id)
        self.trace_ids.append(trace_id)


async def channels(pool: asyncpg.Pool, ids: list[str]) -> list[str]:
    rows = [await repository.get_notification(pool, i) for i in ids]
    return sorted(row["channel"] for row in rows if row is not None)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, ["email"]),
        ({"notification_preferences": {"email": False, "sms": False, "push": False}}, ["email"]),
        ({"notification_preferences": {"email": True, "sms": True, "push": False}}, ["email", "sms"]),
        ({"phone": None, "notification_preferences": {"email": True, "sms": True, "push": False}}, ["email"]),
        (
            {
                "push_token": "token-0001",
                "notification_preferences": {"email": True, "sms": False, "push": True},
            },
            ["email", "push"],
        ),
        (
            {"push_token": None, "notification_preferences": {"email": True, "sms": True, "push": True}},
            ["email", "sms"],
        ),
        (
            {
                "push_token": "token-0001",
                "notification_preferences": {"email": True, "sms": False, "push": False},
            },
            ["email"],
        ),
    ],
)
async def test_one_notification_per_enabled_channel(
    pool: asyncpg.Pool, overrides: dict[str, Any], expected: list[str]
) -> None:
    enqueue = Recorder()
    await fan_out(pool, user_registered_event(contact(**overrides)), dispatch=enqueue)
    assert await channels(pool, enqueue.enqueued) == expected


@pytest.mark.parametrize("event_type", ["order.status_changed", "order.cancelled"])
async def test_status_events_notify_with_their_own_template(pool: asyncpg.Pool, event_type: str) -> None:
    event = order_created_event()
    event["event_type"] = event_type
    event["data"].update(from_status="PENDING", to_status="CANCELLED", reason=None, changed_by="system")
    enqueue = Recorder()

    await fan_out(pool, event, dispatch=enqueue)

    [notification_id] = enqueue.enqueued
    row = await repository.get_notification(pool, notification_id)
    assert row is not None
    assert (row["template"], row["user_id"]) == (event_type, event["data"]["user"]["id"])
    assert repository.context_of(row)["to_status"] == "CANCELLED"


async def test_a_redelivered_event_creates_nothing_new(pool: asyncpg.Pool) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    event = order_created_event(user)
    first, second = Recorder(), Recorder()

    await fan_out(pool, event, dispatch=first)
    await fan_out(pool, event, dispatch=second)

    count = await pool.fetchval("SELECT count(*) FROM notifications WHERE event_id = $1", event["event_id"])
    assert count == 2
    # Nobody picked them up yet, so the redelivery dispatches them again (the first may be lost).
    assert sorted(second.enqueued) == sorted(first.enqueued)
    assert set(second.trace_ids) == {event["trace_id"]}


async def test_a_redelivered_event_does_not_dispatch_notifications_already_sent(pool: asyncpg.Pool) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    event = order_created_event(user)
    first, second = Recorder(), Recorder()
    await fan_out(pool, event, dispatch=first)
    sent = first.enqueued[0]
    async with pool.acquire() as conn:
        row = await repository.claim(conn, sent, lease_s=30, revive_dead=False)
        assert row is not None
        await repository.finish_attempt(conn, row, outcome="sent", provider_message_id="provider-1")

    await fan_out(pool, event, dispatch=second)

    assert second.enqueued == [i for i in first.enqueued if i != sent]


async def test_a_redelivered_event_dispatches_a_notification_in_flight_again(pool: asyncpg.Pool) -> None:
    # The first run may have died in its own inline attempt, leaving no deliver message behind:
    # only the claim can tell whether someone still holds the row (a busy row is looked at later).
    event = order_created_event()
    first, second = Recorder(), Recorder()
    await fan_out(pool, event, dispatch=first)
    [in_flight] = first.enqueued
    async with pool.acquire() as conn:
        assert await repository.claim(conn, in_flight, lease_s=30, revive_dead=False) is not None

    await fan_out(pool, event, dispatch=second)

    assert second.enqueued == [in_flight]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(event_type="user.deleted"),
        lambda e: e.update(event_id="not-a-uuid"),
        lambda e: e["data"].pop("user"),
        lambda e: e["data"]["user"].pop("email"),
    ],
    ids=["unknown-type", "bad-id", "no-user", "no-email"],
)
async def test_an_event_breaking_the_contract_is_invalid(pool: asyncpg.Pool, mutate: Any) -> None:
    event = user_registered_event()
    mutate(event)
    with pytest.raises(InvalidEvent):
        await fan_out(pool, event, dispatch=Recorder())


class CountingPool:
    """The pool, counting the statements the fan-out sends through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append(query)
        return await self.pool.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        self.statements.append(query)
        return await self.pool.fetchrow(query, *args)


def status_changed_event(user: dict[str, Any]) -> dict[str, Any]:
    event = order_created_event(user)
    event["event_type"] = "order.status_changed"
    event["data"].update(from_status="PENDING", to_status="CONFIRMED", reason=None, changed_by="system")
    return event


async def test_events_fanned_out_together_are_one_insert_and_dispatched_in_order(pool: asyncpg.Pool) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    created, changed = order_created_event(user), status_changed_event(user)
    counting, enqueue = CountingPool(pool), Recorder()

    dispatched = await fan_out_all(cast(asyncpg.Pool, counting), [created, changed], dispatch=enqueue)

    assert len(counting.statements) == 1
    rows = [await repository.get_notification(pool, i) for i in enqueue.enqueued]
    assert [(row["event_type"], row["channel"]) for row in rows if row is not None] == [
        ("order.created", "email"),
        ("order.created", "sms"),
        ("order.status_changed", "email"),
        ("order.status_changed", "sms"),
    ]
    assert dispatched == enqueue.enqueued
    last = rows[3]
    assert last is not None
    assert repository.context_of(last)["to_status"] == "CONFIRMED"


async def test_several_events_write_nothing_if_one_breaks_the_contract(pool: asyncpg.Pool) -> None:
    user = contact()
    created, broken = order_created_event(user), status_changed_event(user)
    broken["data"].pop("user")

    with pytest.raises(InvalidEvent):
        await fan_out_all(pool, [created, broken], dispatch=Recorder())

    count = await pool.fetchval("SELECT count(*) FROM notifications WHERE event_id = $1", created["event_id"])
    assert count == 0
