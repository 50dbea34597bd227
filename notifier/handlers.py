"""HTTP in, service call, HTTP out. Nothing else."""

from __future__ import annotations

from aiohttp import web

from common.auth import authenticate, require_admin
from common.web import REQUEST_ID, json_response, parse_body, parse_query
from notifier import resend, service
from notifier.schemas import ListQuery, NotificationPage, ResendMatching, SendIn
from notifier.state import DEPS


async def list_notifications(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    query = parse_query(request, ListQuery)
    items, total = await service.list_notifications(request.app[DEPS], caller, query)
    return json_response(NotificationPage(items=items, total=total, limit=query.limit, offset=query.offset))


async def send_notification(request: web.Request) -> web.Response:
    caller = await require_admin(request)
    body = await parse_body(request, SendIn)
    notification = await service.send(request.app[DEPS], caller, body, trace_id=request.get(REQUEST_ID))
    return json_response(
        notification, status=202, headers={"Location": f"/api/notifications/{notification.id}"}
    )


async def get_notification(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    return json_response(await service.get_notification(request.app[DEPS], caller, request.match_info["id"]))


async def resend_notification(request: web.Request) -> web.Response:
    caller = await require_admin(request)
    deps = request.app[DEPS]
    notification = await resend.resend(
        deps.pool, deps.queue, request.match_info["id"], resent_by=caller.user_id
    )
    return json_response(
        notification, status=202, headers={"Location": f"/api/notifications/{notification.id}"}
    )


async def resend_matching(request: web.Request) -> web.Response:
    caller = await require_admin(request)
    body = await parse_body(request, ResendMatching)
    deps = request.app[DEPS]
    result = await resend.resend_matching(deps.pool, deps.queue, body, resent_by=caller.user_id)
    return json_response(result, status=200 if result.dry_run else 202)
