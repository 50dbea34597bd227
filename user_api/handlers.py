"""HTTP in, service call, HTTP out. Nothing else."""

from __future__ import annotations

from aiohttp import web

from common.auth import authenticate, require_admin
from common.pagination import PageQuery
from common.web import client_ip, json_response, parse_body, parse_query
from user_api import service
from user_api.schemas import LoginIn, LogoutIn, RefreshIn, RegisterIn, UserPage, UserUpdateIn
from user_api.state import DEPS, TRUSTED_PROXIES


async def register(request: web.Request) -> web.Response:
    body = await parse_body(request, RegisterIn)
    user = await service.register(request.app[DEPS], body)
    return json_response(user, status=201, headers={"Location": f"/api/users/{user.id}"})


async def login(request: web.Request) -> web.Response:
    body = await parse_body(request, LoginIn)
    ip = client_ip(request, request.app[TRUSTED_PROXIES])
    return json_response(await service.login(request.app[DEPS], body, client_ip=ip))


async def refresh(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshIn)
    return json_response(await service.refresh(request.app[DEPS], body.refresh_token))


async def logout(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    if request.can_read_body:
        await parse_body(request, LogoutIn)  # accepted for client symmetry; the session is in the token
    await service.logout(request.app[DEPS], caller)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.get_user(request.app[DEPS], caller, caller.user_id))


async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    query = parse_query(request, PageQuery)
    users, total = await service.list_users(request.app[DEPS], limit=query.limit, offset=query.offset)
    return json_response(UserPage(items=users, total=total, limit=query.limit, offset=query.offset))


async def get_user(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.get_user(request.app[DEPS], caller, request.match_info["id"]))


async def update_user(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    body = await parse_body(request, UserUpdateIn)
    user = await service.update_user(request.app[DEPS], caller, request.match_info["id"], body)
    return json_response(user)


async def delete_user(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    await service.delete_user(request.app[DEPS], caller, request.match_info["id"])
    return web.Response(status=204)
