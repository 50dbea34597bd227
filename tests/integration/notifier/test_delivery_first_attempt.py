"""The fan-out's inline first attempt (notifier.delivery.first_attempt): the same claim and lease
as a deliver message (taken by the insert, as the workers do, or by a claim of its own), and a
deliver message only when the attempt has to wait."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import pytest

from notifier import repository
from notifier.delivery import DeliveryDeps, deliver, first_attempt
from notifier.fanout import FirstAttempts, fan_out, notification_id_for
from tests.integration.notifier.conftest import FakeProvider
from tests.integration.notifier.helpers import SmtpServer, contact, order_created_event, user_registered_event


@dataclass
class Deferred:
    """Stands in for the deliver-message publisher; records what would have been published."""

    messages: list[tuple[str, str | None, int | None, int]] = field(default_factory=list)

    async def __call__(
        self, notification_id: str, *, trace_id: str | None, delay_ms: int | None, retries: int
    ) -> None:
        self.messages.append((notification_id, trace_id, delay_ms, retries))


async def fan_out_inline(
    pool: asyncpg.Pool, deps: DeliveryDeps, event: dict[str, object], *, claimed_by_insert: bool
) -> Deferred:
    """The fan-out as the workers run it (``claimed_by_insert``), or with a claim per attempt."""
    deferred = Deferred()

    async def dispatch(notification_id: str, trace_id: str | None) -> str:
        return await first_attempt(deps, notification_id, trace_id, defer=deferred)

    async def attempt(row: asyncpg.Record) -> str:
        return await first_attempt(deps, row["id"], row["trace_id"], defer=deferred, claimed=row)

    first = FirstAttempts(deps.lease_s, attempt) if claimed_by_insert else None
    await fan_out(pool, event, dispatch=dispatch, first_attempts=first)
    return deferred


BOTH_WAYS = pytest.mark.parametrize("claimed_by_insert", [True, False], ids=["claimed-by-insert", "claim"])


async def outcomes(pool: asyncpg.Pool, notification_id: str) -> list[str]:
    return [row["outcome"] for row in await repository.list_attempts(pool, notification_id)]


@BOTH_WAYS
async def test_the_fan_out_sends_the_email_itself_and_publishes_no_deliver_message(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, claimed_by_insert: bool
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")

    deferred = await fan_out_inline(pool, deps, event, claimed_by_insert=claimed_by_insert)

    assert deferred.messages == []
    assert len(smtp.handler.with_message_id(f"<{email_id}@shop.test>")) == 1
    assert await outcomes(pool, email_id) == ["sent"]


@BOTH_WAYS
async def test_a_redelivered_fan_out_sends_no_second_email(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer, claimed_by_insert: bool
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")

    await fan_out_inline(pool, deps, event, claimed_by_insert=claimed_by_insert)
    again = await fan_out_inline(pool, deps, event, claimed_by_insert=claimed_by_insert)

    assert again.messages == []
    assert len(smtp.handler.with_message_id(f"<{email_id}@shop.test>")) == 1


@BOTH_WAYS
async def test_a_transient_failure_leaves_a_deliver_message_that_counts_the_first_try(
    pool: asyncpg.Pool,
    deps: DeliveryDeps,
    provider: FakeProvider,
    smtp: SmtpServer,
    claimed_by_insert: bool,
) -> None:
    event = user_registered_event(
        contact(notification_preferences={"email": True, "sms": True, "push": False})
    )
    sms_id = notification_id_for(event["event_id"], "sms")
    await provider.fail("sms", status=429, count=1, retry_after=7)

    deferred = await fan_out_inline(pool, deps, event, claimed_by_insert=claimed_by_insert)

    # The email went out inline; the SMS waits for the provider's Retry-After, one try spent.
    assert deferred.messages == [(sms_id, event["trace_id"], 7000, 1)]
    assert await outcomes(pool, sms_id) == ["transient_error"]
    row = await repository.get_notification(pool, sms_id)
    assert row is not None
    assert row["status"] == "queued"
    assert len(smtp.handler.messages) == 1


async def test_a_row_another_attempt_holds_is_looked_at_after_its_lease_without_spending_a_try(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")
    await fan_out(pool, event, dispatch=lambda *_: _nothing())
    async with pool.acquire() as conn:
        assert await repository.claim(conn, email_id, lease_s=30, revive_dead=False) is not None

    deferred = Deferred()
    assert await first_attempt(deps, email_id, event["trace_id"], defer=deferred) == "deferred"

    [(notification_id, _, delay_ms, retries)] = deferred.messages
    assert (notification_id, retries) == (email_id, 0)
    assert delay_ms is not None
    assert 29_000 <= delay_ms <= 31_500  # the lease's remaining 30 s, and one more
    assert smtp.handler.messages == []


async def test_the_insert_claims_the_new_rows_for_one_attempt_and_the_send_is_that_attempt(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")
    handed: list[asyncpg.Record] = []

    async def attempt(row: asyncpg.Record) -> None:
        handed.append(row)

    await fan_out(pool, event, dispatch=lambda *_: _nothing(), first_attempts=FirstAttempts(30, attempt))

    [row] = handed
    assert (row["id"], row["status"], row["attempts"]) == (email_id, "sending", 1)
    assert 29 <= (row["lease_until"] - row["claimed_at"]).total_seconds() <= 31
    # Nobody else can take it meanwhile; the send is attempt 1 and finishes the row.
    async with pool.acquire() as conn:
        assert await repository.claim(conn, email_id, lease_s=30, revive_dead=False) is None
    assert await deliver(deps, email_id, claimed=row) == "sent"
    assert [(a["attempt"], a["outcome"]) for a in await repository.list_attempts(pool, email_id)] == [
        (1, "sent")
    ]
    assert len(smtp.handler.messages) == 1


async def test_a_fan_out_that_died_after_its_insert_is_taken_over_once_the_lease_runs_out(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")

    async def died(row: asyncpg.Record) -> None:
        return None  # the worker died between the insert's commit and the send

    await fan_out(pool, event, dispatch=lambda *_: _nothing(), first_attempts=FirstAttempts(1, died))

    # The redelivered fan-out finds the row busy: a deliver message after the lease, no try spent.
    again = await fan_out_inline(pool, deps, event, claimed_by_insert=True)
    [(notification_id, _, delay_ms, retries)] = again.messages
    assert (notification_id, retries) == (email_id, 0)
    assert delay_ms is not None
    assert delay_ms <= 2_100
    await asyncio.sleep(1.1)
    assert await deliver(deps, email_id) == "sent"
    assert await outcomes(pool, email_id) == ["interrupted", "sent"]
    assert len(smtp.handler.messages) == 1


async def _nothing() -> None:
    return None
