"""HTTP in, service call, HTTP out. Nothing else."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel

from common.auth import authenticate
from common.errors import MalformedRequest, UnsupportedMediaType
from common.pagination import Page
from common.validation import validate
from common.web import json_response, parse_query
from order_api import service
from order_api.schemas import OrderIn, OrderListQuery, OrderOut, StatusChangeIn
from order_api.state import DEPS

M = TypeVar("M", bound=BaseModel)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


async def parse_money_body(request: web.Request, model: type[M]) -> M:
    """common.web.parse_body, except that JSON numbers become Decimal, never binary floats.

    Same answers: 415 for another media type, 400 for broken JSON (NaN and Infinity included),
    422 for a document that does not pass validation.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the body is not valid JSON") from None
    except RecursionError:
        # json.loads recurses per nesting level; 64 KiB of "[" would otherwise be a 500.
        raise MalformedRequest("the body is nested too deeply") from None
    return validate(model, data)


async def list_orders(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    query = parse_query(request, OrderListQuery)
    orders, total = await service.list_orders(request.app[DEPS], caller, query)
    return json_response(Page[OrderOut](items=orders, total=total, limit=query.limit, offset=query.offset))


async def create_order(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    body = await parse_money_body(request, OrderIn)
    placed = await service.place_order(
        request.app[DEPS], caller, body, idempotency_key=request.headers.get("Idempotency-Key")
    )
    headers = {"Location": f"/api/orders/{placed.order_id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(text=placed.body, status=placed.status, headers=headers)


async def get_order(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.get_order(request.app[DEPS], caller, request.match_info["id"]))


async def change_status(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    body = await parse_money_body(request, StatusChangeIn)
    order = await service.change_status(request.app[DEPS], caller, request.match_info["id"], body)
    return json_response(order)


async def cancel_order(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.cancel_order(request.app[DEPS], caller, request.match_info["id"]))
