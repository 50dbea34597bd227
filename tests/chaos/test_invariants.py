"""The invariant checker sees each kind of violation (and none where there is none)."""

from __future__ import annotations

from collections import Counter

from tests.chaos.invariants import judge, mails_per_order
from tests.chaos.load import OrderAttempt

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def _accepted(key: str, order_id: str) -> OrderAttempt:
    return OrderAttempt(key, 0.0, accepted_at=1.0, order_id=order_id)


def _mails(*subjects: str) -> tuple[Counter[str], Counter[str]]:
    return mails_per_order(Counter(subjects))


def test_a_complete_order_violates_nothing() -> None:
    received, confirmed = _mails(f"We received your order {A}", f"Your order {A} is now confirmed")
    verdict = judge(
        [_accepted("k1", A)], [{"key": "k1", "id": A, "status": "CONFIRMED"}], received, confirmed
    )
    assert verdict.counts() == {"lost": 0, "duplicate_orders": 0, "duplicate_emails": 0, "stuck": 0}


def test_pending_without_mail_is_lost_and_stuck() -> None:
    verdict = judge([_accepted("k1", A)], [{"key": "k1", "id": A, "status": "PENDING"}], Counter(), Counter())
    assert verdict.lost == ["k1"]
    assert verdict.stuck == [A]


def test_an_accepted_order_missing_from_the_database_is_lost() -> None:
    received, confirmed = _mails()
    assert judge([_accepted("k1", A)], [], received, confirmed).lost == ["k1"]


def test_a_missing_confirmation_email_is_lost() -> None:
    received, confirmed = _mails(f"We received your order {A}")
    rows = [{"key": "k1", "id": A, "status": "CONFIRMED"}]
    assert judge([_accepted("k1", A)], rows, received, confirmed).lost == ["k1"]


def test_two_orders_for_one_key_and_a_repeated_email_are_duplicates() -> None:
    received, confirmed = _mails(
        f"We received your order {A}",
        f"We received your order {A}",
        f"Your order {A} is now confirmed",
        f"We received your order {B}",
        f"Your order {B} is now confirmed",
    )
    rows = [{"key": "k1", "id": A, "status": "CONFIRMED"}, {"key": "k1", "id": B, "status": "CONFIRMED"}]
    verdict = judge([_accepted("k1", A)], rows, received, confirmed)
    assert verdict.duplicate_orders == ["k1"]
    assert verdict.duplicate_emails == [A]
    assert verdict.lost == []


def test_an_order_the_client_never_saw_accepted_is_not_lost_but_may_be_stuck() -> None:
    gave_up = OrderAttempt("k2", 0.0, gave_up=True)
    verdict = judge([gave_up], [{"key": "k2", "id": B, "status": "PENDING"}], Counter(), Counter())
    assert verdict.lost == []
    assert verdict.stuck == [B]
