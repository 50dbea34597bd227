"""A local stand-in for the SMS (Twilio-shaped) and push (FCM-shaped) providers.

``python -m notifier.fake_provider --port 8090 [--token T]``. It answers like the real APIs,
records every request it accepts, and can be told to fail, for development and tests:

    GET    /_fake/messages[?channel=sms|push]     what was received, oldest first
    DELETE /_fake/messages                        forget it
    PUT    /_fake/failures/{sms|push|all}         {"status": 503, "count": 2, "delay_s": 0,
                                                   "retry_after": null}  (count null = until cleared)
    DELETE /_fake/failures                        back to normal
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHANNELS = ("sms", "push")


@dataclass
class FailureMode:
    status: int
    count: int | None
    delay_s: float
    retry_after: int | None


@dataclass
class ProviderState:
    token: str | None
    received: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, FailureMode] = field(default_factory=dict)


STATE: web.AppKey[ProviderState] = web.AppKey("fake_provider_state", ProviderState)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)


async def _maybe_fail(state: ProviderState, channel: str) -> web.Response | None:
    mode = state.failures.get(channel) or state.failures.get("all")
    if mode is None:
        return None
    if mode.delay_s:
        await asyncio.sleep(mode.delay_s)
    if mode.count is not None:
        mode.count -= 1
        if mode.count <= 0:
            state.failures = {k: v for k, v in state.failures.items() if v is not mode}
    if mode.status < 400:
        return None  # a slow but successful provider
    headers = {"Retry-After": str(mode.retry_after)} if mode.retry_after is not None else None
    return _error(mode.status, "failure injected by the fake provider", headers)


def _basic_password(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value).decode().partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return None


async def send_sms(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.token is not None and _basic_password(request) != state.token:
        return _error(401, "authenticate with the account sid and token")
    if (failure := await _maybe_fail(state, "sms")) is not None:
        return failure
    form = await request.post()
    to, sender, body = form.get("To"), form.get("From"), form.get("Body")
    if not isinstance(to, str) or not isinstance(sender, str) or not isinstance(body, str) or not body:
        return _error(400, "To, From and Body are required")
    sid = "SM" + uuid.uuid4().hex
    state.received.append(
        {
            "channel": "sms",
            "sid": sid,
            "account": request.match_info["sid"],
            "to": to,
            "from": sender,
            "body": body,
            "idempotency_key": request.headers.get("Idempotency-Key"),
            "trace_id": request.headers.get("X-Trace-Id"),
        }
    )
    return web.json_response(
        {"sid": sid, "status": "queued", "to": to, "from": sender, "body": body}, status=201
    )


async def send_push(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.token is not None and request.headers.get("Authorization") != f"Bearer {state.token}":
        return _error(401, "a valid bearer token is required")
    if (failure := await _maybe_fail(state, "push")) is not None:
        return failure
    try:
        message = (await request.json())["message"]
        token, notification = message["token"], message["notification"]
        title, body = notification["title"], notification["body"]
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected {message: {token, notification: {title, body}}}")
    project = request.match_info["project"]
    name = f"projects/{project}/messages/{uuid.uuid4().hex}"
    state.received.append(
        {
            "channel": "push",
            "name": name,
            "token": token,
            "title": title,
            "body": body,
            "data": message.get("data") or {},
            "idempotency_key": request.headers.get("Idempotency-Key"),
        }
    )
    return web.json_response({"name": name})


async def list_messages(request: web.Request) -> web.Response:
    channel = request.query.get("channel")
    items = [m for m in request.app[STATE].received if channel is None or m["channel"] == channel]
    return web.json_response({"items": items})


async def clear_messages(request: web.Request) -> web.Response:
    request.app[STATE].received.clear()
    return web.Response(status=204)


async def set_failure(request: web.Request) -> web.Response:
    channel = request.match_info["channel"]
    if channel not in (*CHANNELS, "all"):
        return _error(404, "channel is sms, push or all")
    try:
        spec = await request.json()
        mode = FailureMode(
            status=int(spec.get("status", 503)),
            count=None if spec.get("count") is None else int(spec["count"]),
            delay_s=float(spec.get("delay_s", 0)),
            retry_after=None if spec.get("retry_after") is None else int(spec["retry_after"]),
        )
    except (ValueError, TypeError, AttributeError):
        return _error(400, 'expected {"status": 503, "count": null, "delay_s": 0, "retry_after": null}')
    request.app[STATE].failures[channel] = mode
    return web.json_response({"channel": channel, **mode.__dict__})


async def clear_failures(request: web.Request) -> web.Response:
    request.app[STATE].failures.clear()
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "service": "fake_provider"})


def create_app(token: str | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = ProviderState(token=token)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", send_sms)
    app.router.add_post("/v1/projects/{project}/messages:send", send_push)
    app.router.add_get("/_fake/messages", list_messages)
    app.router.add_delete("/_fake/messages", clear_messages)
    app.router.add_put("/_fake/failures/{channel}", set_failure)
    app.router.add_delete("/_fake/failures", clear_failures)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notifier.fake_provider", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--token", default=None, help="require this token (default: accept any)")
    args = parser.parse_args(argv)
    print(
        json.dumps(
            {
                "message": "fake provider listening",
                "service.name": "fake_provider",
                "host": args.host,
                "port": args.port,
            }
        ),
        flush=True,
    )
    web.run_app(create_app(args.token), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
