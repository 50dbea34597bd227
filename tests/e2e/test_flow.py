"""The seed's communication flow, through the gateway: user → order → RabbitMQ → email."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.e2e.conftest import FAKE_PROVIDER_URL, GATEWAY_URL, MAIL_URL, User, eventually, mails_to

ORDER = {
    "currency": "EUR",
    "items": [{"sku": "BOOK-1", "name": "A book", "quantity": 2, "unit_price": "19.99"}],
}

pytestmark = pytest.mark.live_stack


def _order(http: requests.Session, user: User, order_id: str) -> dict[str, Any]:
    response = http.get(f"{GATEWAY_URL}/api/orders/{order_id}", headers=user.auth, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_order_is_confirmed_and_emailed_and_tracked(
    http: requests.Session, new_user: Callable[..., User]
) -> None:
    user = new_user()
    created = http.post(f"{GATEWAY_URL}/api/orders", json=ORDER, headers=user.auth, timeout=10)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["total"] == "39.98"
    assert order["status"] == "PENDING"

    eventually(lambda: _order(http, user, order["id"])["status"] == "CONFIRMED", what="CONFIRMED")

    def confirmation_mail() -> list[dict[str, Any]]:
        return [m for m in mails_to(http, user.email) if "confirmed" in m["subject"].lower()]

    [mail] = eventually(confirmation_mail, what="the confirmation email")
    detail = http.get(f"{MAIL_URL}/messages/{mail['id']}", timeout=5).json()
    assert order["id"] in detail["text"]
    assert "39.98" in detail["text"]

    def sent_notifications() -> list[dict[str, Any]]:
        listing = http.get(
            f"{GATEWAY_URL}/api/notifications", params={"limit": "50"}, headers=user.auth, timeout=10
        )
        assert listing.status_code == 200, listing.text
        return [n for n in listing.json()["items"] if n["status"] == "sent"]

    sent = eventually(
        lambda: len(sent_notifications()) >= 3 and sent_notifications(), what="3 sent notifications"
    )
    assert {n["template"] for n in sent} >= {"user.registered", "order.created", "order.status_changed"}
    one = http.get(f"{GATEWAY_URL}/api/notifications/{sent[0]['id']}", headers=user.auth, timeout=10).json()
    assert one["attempt_log"][-1]["outcome"] == "sent"


def test_cancelling_an_order_is_recorded_and_announced(
    http: requests.Session, new_user: Callable[..., User]
) -> None:
    user = new_user()
    order = http.post(f"{GATEWAY_URL}/api/orders", json=ORDER, headers=user.auth, timeout=10).json()
    cancelled = http.delete(f"{GATEWAY_URL}/api/orders/{order['id']}", headers=user.auth, timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    again = http.delete(f"{GATEWAY_URL}/api/orders/{order['id']}", headers=user.auth, timeout=10)
    assert again.status_code == 409
    assert again.headers["Content-Type"].startswith("application/problem+json")
    eventually(
        lambda: any("cancel" in m["subject"].lower() for m in mails_to(http, user.email)),
        what="the cancellation email",
    )
    history = [h["to_status"] for h in _order(http, user, order["id"])["history"]]
    assert history[-1] == "CANCELLED"


def test_sms_and_push_reach_the_provider_when_enabled(
    http: requests.Session, new_user: Callable[..., User]
) -> None:
    phone = f"+44770090{random.randint(1000, 9999)}"
    token = f"e2e-device-{uuid.uuid4().hex}"
    user = new_user(phone=phone, notification_preferences={"email": True, "sms": True, "push": True})
    update = http.put(
        f"{GATEWAY_URL}/api/users/{user.id}", json={"push_token": token}, headers=user.auth, timeout=10
    )
    assert update.status_code == 200, update.text
    # The welcome went out before the token existed; the order's messages use it.
    http.post(f"{GATEWAY_URL}/api/orders", json=ORDER, headers=user.auth, timeout=10).raise_for_status()

    def received(channel: str, needle: str) -> list[dict[str, Any]]:
        items = http.get(f"{FAKE_PROVIDER_URL}/_fake/messages", params={"channel": channel}, timeout=5).json()
        return [m for m in items["items"] if needle in str(m)]

    eventually(lambda: received("sms", phone), what="an SMS to the user's phone")
    eventually(lambda: received("push", token), what="a push to the user's device")
