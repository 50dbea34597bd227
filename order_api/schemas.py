"""Request and response bodies of order_api, and the order shape its events carry.

Money is ``Decimal`` end to end: accepted as a JSON string (``"19.99"``) or an exact JSON number
(the handler parses numbers as ``Decimal``, never ``float``), at most two decimal places, and
always written back as a string with two decimals. Totals are computed here and in the database;
a client cannot send one (``total`` or ``line_total`` in a body is an unknown field → 422).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

# What notifications need of a user, read from user_api: the contract's one model.
from common.events import Contact as Contact
from common.openapi import Models
from common.pagination import Page, PageQuery
from common.validation import INPUT_CONFIG, Strip, text, whole_number

MAX_ITEMS = 50
MAX_QUANTITY = 1000
MIN_UNIT_PRICE = Decimal("0.01")
MAX_UNIT_PRICE = Decimal("100000.00")
CENT = Decimal("0.01")


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


# 0.01 to 100000.00 with at most two decimals, as a string: the range said as a pattern, so a
# string the document allows is never refused ("0" and "0.00" are not prices).
PRICE_PATTERN = r"^(?:100000(?:\.0{1,2})?|[1-9][0-9]{0,4}(?:\.[0-9]{1,2})?|0\.(?:0[1-9]|[1-9][0-9]?))$"
_PRICE_RE = re.compile(PRICE_PATTERN)
UNIT_PRICE_SCHEMA: dict[str, Any] = {
    "description": 'A decimal string ("19.99") or an exact JSON number, 0.01 to 100000.00',
    "oneOf": [
        {"type": "string", "pattern": PRICE_PATTERN},
        {"type": "number", "minimum": 0.01, "maximum": 100000, "multipleOf": 0.01},
    ],
}


def _exact_amount(value: object) -> object:
    # bool is an int subclass and float is binary: neither is an amount of money.
    if isinstance(value, (bool, float)):
        raise ValueError('must be a decimal string such as "19.99" or an exact JSON number')
    if isinstance(value, str) and not _PRICE_RE.search(value):
        raise ValueError('must be a decimal string from "0.01" to "100000.00", at most two decimals')
    return value


def _to_cents(value: Decimal) -> Decimal:
    # "19.9" and "19.90" are the same price; one canonical form keeps request hashes stable.
    return value.quantize(CENT)


UnitPrice = Annotated[
    Decimal,
    BeforeValidator(_exact_amount),
    Field(ge=MIN_UNIT_PRICE, le=MAX_UNIT_PRICE, max_digits=8, decimal_places=2),
    AfterValidator(_to_cents),
    WithJsonSchema(UNIT_PRICE_SCHEMA, mode="validation"),
]
Money = Annotated[
    Decimal,
    PlainSerializer(lambda amount: f"{amount:.2f}", return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "examples": ["19.99"]}, mode="serialization"
    ),
]
# No surrounding white space (the pattern says so); Strip only drops the newline Python's "$"
# lets through, as it does for every pattern here.
Sku = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"), Strip
]
ItemName = Annotated[str, text(200), Strip]
Reason = Annotated[str, text(500), Strip]


class Strict(BaseModel):
    model_config = INPUT_CONFIG


class ItemIn(Strict):
    sku: Sku
    name: ItemName
    # "2" and true are not quantities; 2.0 is one, as JSON Schema's "integer" says.
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY), BeforeValidator(whole_number)]
    unit_price: UnitPrice


class OrderIn(Strict):
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")] = Field(
        description="ISO 4217 code, upper case", examples=["EUR"]
    )
    # JSON Schema's uniqueItems compares whole items; one line per sku is said by x-unique-by
    # (and kept by the fuzzer's hooks, tests/fuzz_hooks.py).
    items: Annotated[
        list[ItemIn],
        Field(
            min_length=1,
            max_length=MAX_ITEMS,
            description="Each sku at most once",
            json_schema_extra={"x-unique-by": "sku"},
        ),
    ]

    @field_validator("items")
    @classmethod
    def _one_line_per_sku(cls, items: list[ItemIn]) -> list[ItemIn]:
        skus = [item.sku for item in items]
        if len(set(skus)) != len(skus):
            raise ValueError("each sku may appear once; raise its quantity instead")
        return items


# Only these are set through the API; REJECTED is decided by processing, PENDING is the start.
Settable = Literal["CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED"]


class StatusChangeIn(Strict):
    status: Settable
    reason: Reason | None = None


class OrderListQuery(PageQuery):
    status: OrderStatus | None = None


class ItemOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: Money
    line_total: Money


class OrderOut(BaseModel):
    """The order as the API returns it and as events carry it (docs/contracts.md ``Order``)."""

    id: str
    user_id: str
    status: OrderStatus
    currency: str
    items: list[ItemOut]
    total: Money
    created_at: datetime
    updated_at: datetime


class HistoryEntryOut(BaseModel):
    from_status: OrderStatus | None
    to_status: OrderStatus
    changed_by: str
    reason: str | None
    changed_at: datetime


class OrderDetailOut(OrderOut):
    history: list[HistoryEntryOut]


class OrderPage(Page[OrderOut]):
    pass


OPENAPI_MODELS = Models(inputs=[OrderIn, StatusChangeIn], outputs=[OrderOut, OrderDetailOut, OrderPage])
