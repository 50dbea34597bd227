"""Placing an order (order_api.service.place_order): totals, the contact, Idempotency-Key replays.

The users client is a dict behind the service's ``Users`` protocol; the repository is in memory.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any, cast

import pytest

from common.errors import InvalidInput
from common.events import ORDER_CREATED
from common.jwt import Caller
from order_api import repository, service
from order_api.schemas import Contact, OrderIn
from order_api.settings import Settings
from tests.unit.fakes import FakeOrderRepository, FakePool


class DictUsers:
    def __init__(self) -> None:
        self.contacts: dict[str, Contact] = {}
        self.calls = 0

    def add(self, user_id: str) -> None:
        self.contacts[user_id] = Contact.model_validate(
            {"id": user_id, "email": "ada@example.com", "name": "Ada", "phone": "+447700900123"}
        )

    async def fetch_contact(self, user_id: str, bearer_token: str) -> Contact | None:
        self.calls += 1
        return self.contacts.get(user_id)


@pytest.fixture
def users() -> DictUsers:
    return DictUsers()


@pytest.fixture
def deps(users: DictUsers) -> service.Deps:
    return service.Deps(cast(Any, FakePool()), users, Settings(app_env="test"))


@pytest.fixture
def caller(users: DictUsers) -> Caller:
    user_id = str(uuid.uuid4())
    users.add(user_id)
    return Caller(user_id, "user", "jti", "sid", 0, "token")


def order(*items: tuple[str, int, str]) -> OrderIn:
    return OrderIn.model_validate(
        {
            "currency": "EUR",
            "items": [{"sku": s, "name": s, "quantity": q, "unit_price": p} for s, q, p in items],
        }
    )


async def test_totals_are_exact_decimals_per_line_and_for_the_order(
    deps: service.Deps, caller: Caller, orders: FakeOrderRepository
) -> None:
    placed = await service.place_order(
        deps, caller, order(("A", 3, "0.10"), ("B", 1, "0.20"), ("C", 7, "19.99")), idempotency_key=None
    )
    stored = orders.orders[placed.order_id]
    assert stored["total"] == Decimal("140.43")  # 0.1 * 3 + 0.2 in floats is 0.5000000000000001
    assert [i["line_total"] for i in orders.items[placed.order_id]] == [
        Decimal("0.30"),
        Decimal("0.20"),
        Decimal("139.93"),
    ]
    body = json.loads(placed.body)
    assert body["total"] == "140.43"
    assert body["status"] == "PENDING"
    assert not placed.replayed


async def test_the_order_created_event_carries_the_order_and_the_contact(
    deps: service.Deps, caller: Caller, orders: FakeOrderRepository
) -> None:
    placed = await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key=None)
    [event] = orders.events
    assert event["event_type"] == ORDER_CREATED
    assert event["data"]["order"]["id"] == placed.order_id
    assert event["data"]["user"]["phone"] == "+447700900123"
    assert json.loads(orders.orders[placed.order_id]["contact"])["email"] == "ada@example.com"


async def test_a_user_the_user_service_does_not_know_cannot_order(
    deps: service.Deps, users: DictUsers, caller: Caller, orders: FakeOrderRepository
) -> None:
    del users.contacts[caller.user_id]
    with pytest.raises(InvalidInput, match="cannot place orders"):
        await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key=None)
    assert orders.orders == {}


async def test_a_replay_answers_from_the_record_without_asking_user_api(
    deps: service.Deps, users: DictUsers, caller: Caller, orders: FakeOrderRepository
) -> None:
    first = await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key="checkout-1")
    calls = users.calls
    again = await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key="checkout-1")
    assert again.replayed
    assert (again.order_id, again.body) == (first.order_id, first.body)
    assert users.calls == calls
    assert len(orders.orders) == 1


async def test_a_key_is_the_callers_own(
    deps: service.Deps, users: DictUsers, caller: Caller, orders: FakeOrderRepository
) -> None:
    other = Caller(str(uuid.uuid4()), "user", "jti", "sid", 0, "token")
    users.add(other.user_id)
    mine = await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key="k")
    theirs = await service.place_order(deps, other, order(("A", 1, "5.00")), idempotency_key="k")
    assert mine.order_id != theirs.order_id
    assert not theirs.replayed


async def test_a_key_reused_with_another_body_is_refused(
    deps: service.Deps, caller: Caller, orders: FakeOrderRepository
) -> None:
    await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key="k")
    with pytest.raises(InvalidInput, match="different request"):
        await service.place_order(deps, caller, order(("A", 2, "5.00")), idempotency_key="k")


async def test_losing_the_race_for_a_key_answers_with_the_winners_order(
    deps: service.Deps, caller: Caller, orders: FakeOrderRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The winner commits between our look-up (nothing yet) and our write (refused).
    winner = await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key="race")
    real_lookup = orders.get_idempotency_key
    looked: list[str] = []

    async def first_sees_nothing(db: Any, user_id: str, key: str, *, ttl_s: float) -> dict[str, Any] | None:
        looked.append(key)
        return None if len(looked) == 1 else await real_lookup(db, user_id, key, ttl_s=ttl_s)

    monkeypatch.setattr(repository, "get_idempotency_key", first_sees_nothing)
    loser = await service.place_order(deps, caller, order(("A", 1, "5.00")), idempotency_key="race")
    assert loser.replayed
    assert loser.order_id == winner.order_id
    assert len(orders.orders) == 1
