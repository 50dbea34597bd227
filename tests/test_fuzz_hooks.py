"""The fuzz hooks drop only what the documents' extensions say is refused."""

from __future__ import annotations

from typing import Any

import pytest

from common.openapi import load
from order_api.routes import OPENAPI_PATH as ORDERS
from tests.fuzz_hooks import breaks_an_extension
from user_api.routes import OPENAPI_PATH as USERS


def _body(path: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    document = load(path)
    return document, document["components"]["schemas"][name]


ITEM = {"sku": "A", "name": "a", "quantity": 1, "unit_price": "1.00"}


@pytest.mark.parametrize(
    ("items", "breaks"),
    [([ITEM], False), ([ITEM, {**ITEM, "sku": "B"}], False), ([ITEM, {**ITEM, "quantity": 2}], True)],
)
def test_one_line_per_sku(items: list[dict[str, Any]], breaks: bool) -> None:
    document, schema = _body(ORDERS, "OrderIn")
    assert breaks_an_extension(document, schema, {"currency": "EUR", "items": items}) is breaks


@pytest.mark.parametrize(("password", "breaks"), [("a" * 72, False), ("é" * 36, False), ("é" * 37, True)])
def test_password_bytes(password: str, breaks: bool) -> None:
    for name in ("RegisterIn", "UserUpdateIn"):
        document, schema = _body(USERS, name)
        assert breaks_an_extension(document, schema, {"password": password}) is breaks
