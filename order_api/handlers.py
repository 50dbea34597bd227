"""HTTP in, service call, HTTP out. Nothing else."""

from __future__ import annotations

from aiohttp import web

from common.auth import authenticate
from common.web import json_response, parse_body, parse_query
from order_api import service
from order_api.schemas import OrderIn, OrderListQuery, OrderPage, StatusChangeIn
from order_api.state import DEPS


async def list_orders(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    query = parse_query(request, OrderListQuery)
    orders, total = await service.list_orders(request.app[DEPS], caller, query)
    return json_response(OrderPage(items=orders, total=total, limit=query.limit, offset=query.offset))


async def create_order(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    body = await parse_body(request, OrderIn, exact_numbers=True)
    placed = await service.place_order(
        request.app[DEPS], caller, body, idempotency_key=request.headers.get("Idempotency-Key")
    )
    headers = {"Location": f"/api/orders/{placed.order_id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    # A replay answers as the original request did: 201 Created, with the original body.
    return web.json_response(text=placed.body, status=201, headers=headers)


async def get_order(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.get_order(request.app[DEPS], caller, request.match_info["id"]))


async def change_status(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    body = await parse_body(request, StatusChangeIn, exact_numbers=True)
    order = await service.change_status(request.app[DEPS], caller, request.match_info["id"], body)
    return json_response(order)


async def cancel_order(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.cancel_order(request.app[DEPS], caller, request.match_info["id"]))
