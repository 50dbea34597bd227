"""What an order body may say: money, quantities, skus, currency (order_api.schemas)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from order_api.schemas import MAX_ITEMS, MAX_QUANTITY, OrderIn, StatusChangeIn
from order_api.service import request_hash


def body(*items: tuple[str, Any, Any], currency: str = "EUR") -> dict[str, Any]:
    lines = items or (("SKU-1", 2, "19.99"),)
    return {
        "currency": currency,
        "items": [{"sku": s, "name": f"Item {s}", "quantity": q, "unit_price": p} for s, q, p in lines],
    }


def test_prices_are_kept_to_the_cent() -> None:
    order = OrderIn.model_validate(body(("A", 1, "19.9")))
    assert order.items[0].unit_price == Decimal("19.90")
    assert str(order.items[0].unit_price) == "19.90"


@pytest.mark.parametrize("price", ["0", "0.00", "0.001", "100000.01", "-1", "1e3", "19.999", " 1.00"])
def test_a_price_outside_the_range_or_finer_than_a_cent_is_refused(price: str) -> None:
    with pytest.raises(ValidationError):
        OrderIn.model_validate(body(("A", 1, price)))


@pytest.mark.parametrize("price", ["0.01", "100000", "100000.00", "5"])
def test_the_price_range_is_inclusive(price: str) -> None:
    assert OrderIn.model_validate(body(("A", 1, price))).items[0].unit_price == Decimal(price)


@pytest.mark.parametrize("price", [19.99, True])
def test_binary_floats_and_booleans_are_not_money(price: object) -> None:
    with pytest.raises(ValidationError, match="decimal string"):
        OrderIn.model_validate(body(("A", 1, price)))


def test_an_exact_decimal_number_is_money() -> None:
    # The handler parses JSON numbers as Decimal, never float.
    assert OrderIn.model_validate(body(("A", 1, Decimal("2.50")))).items[0].unit_price == Decimal("2.50")


@pytest.mark.parametrize("quantity", [0, MAX_QUANTITY + 1, "2", True, Decimal("2.5")])
def test_a_quantity_must_be_a_whole_number_in_range(quantity: object) -> None:
    with pytest.raises(ValidationError):
        OrderIn.model_validate(body(("A", quantity, "1.00")))


def test_a_whole_decimal_quantity_is_an_integer() -> None:
    assert OrderIn.model_validate(body(("A", Decimal("2.0"), "1.00"))).items[0].quantity == 2


def test_each_sku_may_appear_once() -> None:
    with pytest.raises(ValidationError, match="each sku may appear once"):
        OrderIn.model_validate(body(("A", 1, "1.00"), ("A", 2, "1.00")))


def test_an_order_has_between_one_and_max_items_lines() -> None:
    with pytest.raises(ValidationError):
        OrderIn.model_validate({"currency": "EUR", "items": []})
    too_many = [(f"SKU-{n}", 1, "1.00") for n in range(MAX_ITEMS + 1)]
    with pytest.raises(ValidationError):
        OrderIn.model_validate(body(*too_many))
    assert len(OrderIn.model_validate(body(*too_many[:MAX_ITEMS])).items) == MAX_ITEMS


@pytest.mark.parametrize("currency", ["eur", "EURO", "E1R", ""])
def test_currency_is_three_upper_case_letters(currency: str) -> None:
    with pytest.raises(ValidationError):
        OrderIn.model_validate(body(currency=currency))


@pytest.mark.parametrize("field", ["total", "line_total"])
def test_a_client_cannot_send_a_total(field: str) -> None:
    sent = body()
    if field == "total":
        sent["total"] = "0.01"
    else:
        sent["items"][0]["line_total"] = "0.01"
    with pytest.raises(ValidationError):
        OrderIn.model_validate(sent)


@pytest.mark.parametrize("sku", ["-A", "A B", "", "x" * 65])
def test_a_sku_is_a_code_not_free_text(sku: str) -> None:
    with pytest.raises(ValidationError):
        OrderIn.model_validate(body((sku, 1, "1.00")))


def test_the_request_hash_ignores_how_a_price_was_written() -> None:
    assert request_hash(OrderIn.model_validate(body(("A", 1, "19.9")))) == request_hash(
        OrderIn.model_validate(body(("A", 1, "19.90")))
    )


def test_the_request_hash_tells_different_orders_apart() -> None:
    assert request_hash(OrderIn.model_validate(body(("A", 1, "1.00")))) != request_hash(
        OrderIn.model_validate(body(("A", 2, "1.00")))
    )


@pytest.mark.parametrize("status", ["PENDING", "REJECTED", "cancelled"])
def test_pending_and_rejected_cannot_be_asked_for(status: str) -> None:
    with pytest.raises(ValidationError):
        StatusChangeIn.model_validate({"status": status})
