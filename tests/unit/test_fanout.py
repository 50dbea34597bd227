"""Which notifications an event becomes (notifier.fanout): channels, ids, the contract."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from common.events import ORDER_CREATED, USER_REGISTERED
from notifier.fanout import Contact, InvalidEvent, channels_for, notification_id_for, parse_event

USER_ID = str(uuid.uuid4())


def contact(**fields: Any) -> Contact:
    return Contact.model_validate({"id": USER_ID, "email": "ada@example.com", "name": "Ada", **fields})


def event(event_type: str = ORDER_CREATED, **user: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": "2026-12-01T12:00:00Z",
        "data": {"user": {"id": USER_ID, "email": "ada@example.com", "name": "Ada", **user}},
    }


def test_email_is_always_planned_even_when_switched_off() -> None:
    assert channels_for(contact(notification_preferences={"email": False})) == [("email", "ada@example.com")]


def test_sms_needs_both_the_preference_and_a_phone() -> None:
    assert [c for c, _ in channels_for(contact(phone="+447700900123"))] == ["email"]
    assert [c for c, _ in channels_for(contact(notification_preferences={"sms": True}))] == ["email"]
    planned = channels_for(contact(phone="+447700900123", notification_preferences={"sms": True}))
    assert planned == [("email", "ada@example.com"), ("sms", "+447700900123")]


def test_push_needs_both_the_preference_and_a_token() -> None:
    assert [c for c, _ in channels_for(contact(notification_preferences={"push": True}))] == ["email"]
    planned = channels_for(contact(push_token="tok-abcdefgh", notification_preferences={"push": True}))
    assert planned[-1] == ("push", "tok-abcdefgh")


def test_every_channel_at_once_in_a_stable_order() -> None:
    everything = contact(
        phone="+447700900123", push_token="tok-abcdefgh", notification_preferences={"sms": True, "push": True}
    )
    assert [c for c, _ in channels_for(everything)] == ["email", "sms", "push"]


def test_a_notification_id_is_the_same_for_a_redelivered_event() -> None:
    event_id = str(uuid.uuid4())
    assert notification_id_for(event_id, "email") == notification_id_for(event_id, "email")
    assert notification_id_for(event_id, "email") != notification_id_for(event_id, "sms")
    assert notification_id_for(event_id, "email") != notification_id_for(str(uuid.uuid4()), "email")


def test_parse_event_reads_the_envelope_and_the_contact() -> None:
    envelope, parsed = parse_event(event(USER_REGISTERED, phone="+447700900123"))
    assert envelope.event_type == USER_REGISTERED
    assert str(parsed.id) == USER_ID
    assert parsed.phone == "+447700900123"
    assert parsed.notification_preferences.email is True


def test_an_event_type_without_notifications_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="no notifications for event type"):
        parse_event(event("order.audited"))


@pytest.mark.parametrize(
    "broken",
    [
        {"event_type": ORDER_CREATED},
        {**event(), "event_id": "nope"},
        {**event(), "data": {}},
        {**event(), "data": {"user": {"id": USER_ID, "name": "Ada"}}},
        "not an object",
    ],
)
def test_an_event_off_the_contract_is_invalid(broken: object) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(broken)
