"""The fan-out's inline first attempt (notifier.delivery.first_attempt): the same claim and lease
as a deliver message, and a deliver message only when the attempt has to wait."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from notifier import repository
from notifier.delivery import DeliveryDeps, first_attempt
from notifier.fanout import fan_out, notification_id_for
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


async def fan_out_inline(pool: asyncpg.Pool, deps: DeliveryDeps, event: dict[str, object]) -> Deferred:
    deferred = Deferred()

    async def dispatch(notification_id: str, trace_id: str | None) -> str:
        return await first_attempt(deps, notification_id, trace_id, defer=deferred)

    await fan_out(pool, event, dispatch=dispatch)
    return deferred


async def outcomes(pool: asyncpg.Pool, notification_id: str) -> list[str]:
    return [row["outcome"] for row in await repository.list_attempts(pool, notification_id)]


async def test_the_fan_out_sends_the_email_itself_and_publishes_no_deliver_message(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")

    deferred = await fan_out_inline(pool, deps, event)

    assert deferred.messages == []
    assert len(smtp.handler.with_message_id(f"<{email_id}@shop.test>")) == 1
    assert await outcomes(pool, email_id) == ["sent"]


async def test_a_redelivered_fan_out_sends_no_second_email(
    pool: asyncpg.Pool, deps: DeliveryDeps, smtp: SmtpServer
) -> None:
    event = order_created_event()
    email_id = notification_id_for(event["event_id"], "email")

    await fan_out_inline(pool, deps, event)
    again = await fan_out_inline(pool, deps, event)

    assert again.messages == []
    assert len(smtp.handler.with_message_id(f"<{email_id}@shop.test>")) == 1


async def test_a_transient_failure_leaves_a_deliver_message_that_counts_the_first_try(
    pool: asyncpg.Pool, deps: DeliveryDeps, provider: FakeProvider, smtp: SmtpServer
) -> None:
    event = user_registered_event(
        contact(notification_preferences={"email": True, "sms": True, "push": False})
    )
    sms_id = notification_id_for(event["event_id"], "sms")
    await provider.fail("sms", status=429, count=1, retry_after=7)

    deferred = await fan_out_inline(pool, deps, event)

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


async def _nothing() -> None:
    return None
