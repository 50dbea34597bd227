"""One delivery's outcome (notifier.delivery.deliver) with fake senders and an in-memory repository.

The templates are the shipped folder, rendered for real; only the provider and the table are fakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from notifier import repository
from notifier.channels import Outgoing, PermanentFailure, TransientFailure
from notifier.delivery import DeliveryDeps, NotificationBusy, NotificationDead, deliver
from notifier.templates import TemplateRenderer
from tests.unit.fakes import FakeNotificationRepository, FakePool, install

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


class FakeSender:
    def __init__(self, fail_with: Exception | None = None) -> None:
        self.sent: list[Outgoing] = []
        self.fail_with = fail_with

    async def send(self, outgoing: Outgoing) -> str | None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(outgoing)
        return f"provider-{len(self.sent)}"


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(TEMPLATES)


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> FakeNotificationRepository:
    fake = FakeNotificationRepository()
    install(monkeypatch, repository, fake)
    return fake


def deps_with(renderer: TemplateRenderer, **senders: FakeSender) -> DeliveryDeps:
    return DeliveryDeps(pool=cast(Any, FakePool()), renderer=renderer, senders=senders, lease_s=60.0)


def test_the_shipped_templates_check_clean(renderer: TemplateRenderer) -> None:
    assert renderer.ok, renderer.problems


async def test_a_queued_email_is_rendered_sent_and_recorded(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    email = FakeSender()
    notification_id = rows.add(channel="email")
    assert await deliver(deps_with(renderer, email=email), notification_id) == "sent"
    [outgoing] = email.sent
    assert outgoing.recipient == "ada@example.com"
    assert outgoing.recipient_name == "Ada"
    assert set(outgoing.content.parts) >= {"subject", "text"}
    assert rows.rows[notification_id]["status"] == "sent"
    assert rows.attempts == [{"id": notification_id, "outcome": "sent", "error": None}]


async def test_each_channel_goes_to_its_own_sender(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    email, sms = FakeSender(), FakeSender()
    notification_id = rows.add(channel="sms")
    await deliver(deps_with(renderer, email=email, sms=sms), notification_id)
    assert email.sent == []
    assert [o.recipient for o in sms.sent] == ["+447700900123"]


async def test_a_permanent_failure_fails_the_notification(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    notification_id = rows.add()
    sender = FakeSender(PermanentFailure("550 no such mailbox"))
    assert await deliver(deps_with(renderer, email=sender), notification_id) == "failed"
    assert rows.rows[notification_id]["status"] == "failed"
    assert rows.attempts[-1] == {
        "id": notification_id,
        "outcome": "permanent_error",
        "error": "550 no such mailbox",
    }


async def test_a_transient_failure_is_recorded_and_raised_for_a_retry(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    notification_id = rows.add()
    sender = FakeSender(TransientFailure("451 try later", retry_after_s=30))
    with pytest.raises(TransientFailure):
        await deliver(deps_with(renderer, email=sender), notification_id)
    assert rows.attempts[-1]["outcome"] == "transient_error"
    assert rows.rows[notification_id]["status"] == "queued"


async def test_a_template_that_does_not_fit_holds_the_notification_unsent(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    notification_id = rows.add(template="order.created")  # its templates need data.order
    sender = FakeSender()
    assert await deliver(deps_with(renderer, email=sender), notification_id) == "held"
    assert sender.sent == []
    assert rows.rows[notification_id]["status"] == "held"
    assert rows.rows[notification_id]["held_fingerprint"] == renderer.fingerprint
    assert rows.attempts[-1]["error"].startswith("held until the templates are fixed")


@pytest.mark.parametrize("status", ["sent", "failed"])
async def test_a_finished_notification_is_never_sent_again(
    renderer: TemplateRenderer, rows: FakeNotificationRepository, status: str
) -> None:
    sender = FakeSender()
    notification_id = rows.add(status=status)
    assert await deliver(deps_with(renderer, email=sender), notification_id) == status
    assert sender.sent == []
    assert rows.attempts == []


async def test_a_missing_row_is_reported_not_retried(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    assert (
        await deliver(deps_with(renderer, email=FakeSender()), "8a0e3a4e-0000-4000-8000-000000000000")
        == "missing"
    )


async def test_a_dead_row_belongs_in_the_dead_letter_queue_unless_replayed(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    sender = FakeSender()
    notification_id = rows.add(status="dead")
    with pytest.raises(NotificationDead):
        await deliver(deps_with(renderer, email=sender), notification_id)
    assert sender.sent == []
    assert await deliver(deps_with(renderer, email=sender), notification_id, replay=True) == "sent"
    assert len(sender.sent) == 1


async def test_a_row_leased_by_another_attempt_is_busy_for_the_rest_of_the_lease(
    renderer: TemplateRenderer, rows: FakeNotificationRepository
) -> None:
    rows.lease_left_s = 12.5
    notification_id = rows.add(status="sending")
    with pytest.raises(NotificationBusy) as busy:
        await deliver(deps_with(renderer, email=FakeSender()), notification_id)
    assert busy.value.retry_after_s == 13.5
