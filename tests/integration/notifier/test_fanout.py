"""Fan-out: one notification per enabled channel, exactly once per (event, channel)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from notifier import repository
from notifier.fanout import InvalidEvent, fan_out
from tests.integration.notifier.helpers import contact, order_created_event, user_registered_event


class Recorder:
    def __init__(self) -> None:
        self.enqueued: list[str] = []

    async def __call__(self, notification_id: str) -> None:
        self.enqueued.append(notification_id)


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
    await fan_out(pool, user_registered_event(contact(**overrides)), enqueue=enqueue)
    assert await channels(pool, enqueue.enqueued) == expected


@pytest.mark.parametrize("event_type", ["order.status_changed", "order.cancelled"])
async def test_status_events_notify_with_their_own_template(pool: asyncpg.Pool, event_type: str) -> None:
    event = order_created_event()
    event["event_type"] = event_type
    event["data"].update(from_status="PENDING", to_status="CANCELLED", reason=None, changed_by="system")
    enqueue = Recorder()

    await fan_out(pool, event, enqueue=enqueue)

    [notification_id] = enqueue.enqueued
    row = await repository.get_notification(pool, notification_id)
    assert row is not None
    assert (row["template"], row["user_id"]) == (event_type, event["data"]["user"]["id"])
    assert repository.context_of(row)["to_status"] == "CANCELLED"


async def test_a_redelivered_event_creates_nothing_new(pool: asyncpg.Pool) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    event = order_created_event(user)
    first, second = Recorder(), Recorder()

    await fan_out(pool, event, enqueue=first)
    await fan_out(pool, event, enqueue=second)

    count = await pool.fetchval("SELECT count(*) FROM notifications WHERE event_id = $1", event["event_id"])
    assert count == 2
    # Nobody picked them up yet, so the redelivery enqueues them again (the first enqueue may be lost).
    assert sorted(second.enqueued) == sorted(first.enqueued)


async def test_a_redelivered_event_does_not_re_enqueue_notifications_already_picked_up(
    pool: asyncpg.Pool,
) -> None:
    user = contact(notification_preferences={"email": True, "sms": True, "push": False})
    event = order_created_event(user)
    first, second = Recorder(), Recorder()
    await fan_out(pool, event, enqueue=first)
    picked = first.enqueued[0]
    async with pool.acquire() as conn:
        await repository.claim(conn, picked, lease_s=30, revive_dead=False)

    await fan_out(pool, event, enqueue=second)

    assert second.enqueued == [i for i in first.enqueued if i != picked]


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
        await fan_out(pool, event, enqueue=Recorder())
