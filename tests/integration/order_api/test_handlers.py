"""Bad requests get clear problem documents: 400, 401, 413, 415, 422 — never a 500."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.order_api.conftest import User, order_body
from tests.openapi_check import CheckedClient

NewUser = Callable[..., User]


def _item(**fields: Any) -> dict[str, Any]:
    return {"sku": "SKU-1", "name": "Widget", "quantity": 1, "unit_price": "1.00", **fields}


def _body(**fields: Any) -> dict[str, Any]:
    return {"currency": "EUR", "items": [_item()], **fields}


async def _post(client: CheckedClient, user: User, body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/orders", json=body, headers=user.auth)
    problem: dict[str, Any] = await response.json(content_type=None)
    return response.status, problem


async def test_every_orders_route_needs_a_token(client: CheckedClient) -> None:
    order_path = "/api/orders/00000000-0000-4000-8000-000000000000"
    responses = [
        await client.get("/api/orders"),
        await client.post("/api/orders", json=order_body()),
        await client.get(order_path),
        await client.put(f"{order_path}/status", json={"status": "CANCELLED"}),
        await client.delete(order_path),
        await client.get("/api/orders", headers={"Authorization": "Bearer not-a-jwt"}),
    ]
    assert [r.status for r in responses] == [401] * 6
    assert all(r.headers["WWW-Authenticate"].startswith("Bearer") for r in responses)


async def test_an_expired_token_is_401(client: CheckedClient, mint_token: Any) -> None:
    token = mint_token("6f1c0000-0000-4000-8000-000000000000", ttl_s=-60)
    response = await client.get("/api/orders", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401


async def test_malformed_json_is_400(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    for raw in (b"{", b'{"currency": "EUR", "items": [}', b"\xff\xfe", b"[" * 60_000):
        response = await client.post(
            "/api/orders", data=raw, headers={**user.auth, "Content-Type": "application/json"}
        )
        assert response.status == 400, raw[:20]
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_numbers_are_400(client: CheckedClient, new_user: NewUser, constant: str) -> None:
    user = new_user()
    raw = '{"currency": "EUR", "items": [{"sku": "A", "name": "a", "quantity": 1, "unit_price": %s}]}'
    response = await client.post(
        "/api/orders", data=raw % constant, headers={**user.auth, "Content-Type": "application/json"}
    )
    assert response.status == 400


async def test_another_media_type_is_415(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    response = await client.post(
        "/api/orders", data="currency=EUR", headers={**user.auth, "Content-Type": "text/plain"}
    )
    assert response.status == 415
    status = await client.put(
        "/api/orders/00000000-0000-4000-8000-000000000000/status",
        data="status=CANCELLED",
        headers={**user.auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status.status == 415


async def test_a_huge_body_is_413(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    body = _body(items=[_item(name="x" * 100_000)])
    response = await client.post("/api/orders", json=body, headers=user.auth)
    assert response.status == 413


INVALID_BODIES: dict[str, Any] = {
    "not an object": [],
    "no items": {"currency": "EUR"},
    "empty items": _body(items=[]),
    "51 items": _body(items=[_item(sku=f"S{i}") for i in range(51)]),
    "lower-case currency": _body(currency="eur"),
    "4-letter currency": _body(currency="EURO"),
    "numeric currency": _body(currency=978),
    "unknown top-level field": _body(coupon="FREE"),
    "client total": _body(total="0.01"),
    "client line_total": _body(items=[_item(line_total="0.01")]),
    "unknown item field": _body(items=[_item(discount="5")]),
    "quantity 0": _body(items=[_item(quantity=0)]),
    "quantity 1001": _body(items=[_item(quantity=1001)]),
    "quantity as string": _body(items=[_item(quantity="2")]),
    "fractional quantity": _body(items=[_item(quantity=1.5)]),
    "boolean quantity": _body(items=[_item(quantity=True)]),
    "price 0": _body(items=[_item(unit_price="0.00")]),
    "negative price": _body(items=[_item(unit_price="-1.00")]),
    "price above the limit": _body(items=[_item(unit_price="100000.01")]),
    "three decimals": _body(items=[_item(unit_price="1.005")]),
    "price not a number": _body(items=[_item(unit_price="ten")]),
    "boolean price": _body(items=[_item(unit_price=True)]),
    "NaN price string": _body(items=[_item(unit_price="NaN")]),
    "empty sku": _body(items=[_item(sku="")]),
    "sku with spaces": _body(items=[_item(sku="A B")]),
    "sku too long": _body(items=[_item(sku="A" * 65)]),
    "duplicate sku": _body(items=[_item(), _item()]),
    "empty name": _body(items=[_item(name="  ")]),
    "control characters in name": _body(items=[_item(name="a\u0000b")]),
    "name too long": _body(items=[_item(name="n" * 201)]),
    "missing unit_price": _body(items=[{"sku": "A", "name": "a", "quantity": 1}]),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
async def test_invalid_orders_are_422_naming_the_field(
    client: CheckedClient, new_user: NewUser, case: str
) -> None:
    user = new_user()
    status, problem = await _post(client, user, copy.deepcopy(INVALID_BODIES[case]))
    assert status == 422, problem
    assert problem["errors"], problem
    assert all({"field", "message"} <= set(error) for error in problem["errors"])


async def test_float_prices_with_binary_noise_are_refused_not_rounded(
    client: CheckedClient, new_user: NewUser
) -> None:
    user = new_user()
    item = '{"sku": "A", "name": "a", "quantity": 1, "unit_price": 0.30000000000000004}'
    raw = f'{{"currency": "EUR", "items": [{item}]}}'
    response = await client.post(
        "/api/orders", data=raw, headers={**user.auth, "Content-Type": "application/json"}
    )
    assert response.status == 422


async def test_the_limits_themselves_are_accepted(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    items = [_item(sku=f"S{i}", quantity=1000, unit_price="100000.00") for i in range(50)]
    status, order = await _post(client, user, _body(items=items))
    assert status == 201, order
    assert order["total"] == "5000000000.00"
    low_status, low = await _post(client, user, _body(items=[_item(unit_price="0.01")]))
    assert low_status == 201
    assert low["total"] == "0.01"


async def test_invalid_status_bodies_are_422(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    path = "/api/orders/00000000-0000-4000-8000-000000000000/status"
    for body in (
        {},
        {"status": "cancelled"},
        {"status": "CANCELLED", "extra": 1},
        {"status": "CANCELLED", "reason": "x" * 501},
        {"status": "CANCELLED", "reason": ""},
    ):
        response = await client.put(path, json=body, headers=user.auth)
        assert response.status == 422, body


async def test_ids_that_are_not_uuids_are_404(client: CheckedClient, new_user: NewUser) -> None:
    user = new_user()
    for path in ("/api/orders/123", "/api/orders/------------------------------------"):
        response = await client.get(path, headers=user.auth)
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"
