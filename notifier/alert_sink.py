"""The development receiver for Alertmanager's webhook: keeps every notification it gets.

``python -m notifier.alert_sink --port 9095 [--store var/alerts/notifications.jsonl]``

Alertmanager (``webhook_configs``) POSTs its JSON payload (version 4) here; the sink records it,
appends it to the store file when one is given (one JSON object per line, so it outlives a
restart and can be grepped), and lists it over HTTP:

    POST   /alerts                 a webhook notification from Alertmanager
    GET    /alerts[?alertname=X&status=firing|resolved]
                                   every alert received, oldest first, each with the receiver,
                                   status, labels, annotations and when it arrived
    GET    /notifications          the payloads as received
    DELETE /alerts                 forget everything (the store file too)
    GET    /health

It is the development stand-in for the on-call webhook (ALERT_WEBHOOK_URL): never expose it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from common.errors import ServiceError

MAX_BODY_BYTES = 4 * 1024 * 1024
STATUSES = ("firing", "resolved")


class InvalidNotification(ServiceError, ValueError):
    """The body is not an Alertmanager webhook payload."""


@dataclass
class SinkState:
    store: Path | None = None
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def load(self) -> None:
        if self.store is None or not self.store.exists():
            return
        for line in self.store.read_text().splitlines():
            if line.strip():
                self.notifications.append(json.loads(line))

    def record(self, notification: dict[str, Any]) -> None:
        self.notifications.append(notification)
        if self.store is not None:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            with self.store.open("a") as file:
                file.write(json.dumps(notification, separators=(",", ":")) + "\n")

    def clear(self) -> None:
        self.notifications.clear()
        if self.store is not None:
            self.store.unlink(missing_ok=True)


STATE: web.AppKey[SinkState] = web.AppKey("alert_sink_state", SinkState)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidNotification(f"{where} must be an object of strings")
    return dict(value)


def parse_notification(payload: Any) -> dict[str, Any]:
    """The fields of Alertmanager's webhook payload the sink keeps, checked."""
    if not isinstance(payload, dict):
        raise InvalidNotification("the body must be a JSON object")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InvalidNotification("alerts must be a non-empty list")
    receiver = payload.get("receiver")
    if not isinstance(receiver, str) or not receiver:
        raise InvalidNotification("receiver must be a non-empty string")
    parsed = []
    for index, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise InvalidNotification(f"alerts[{index}] must be an object")
        status = alert.get("status")
        if status not in STATUSES:
            raise InvalidNotification(f"alerts[{index}].status must be one of {', '.join(STATUSES)}")
        labels = _string_map(alert.get("labels"), f"alerts[{index}].labels")
        if "alertname" not in labels:
            raise InvalidNotification(f"alerts[{index}].labels has no alertname")
        parsed.append(
            {
                "status": status,
                "labels": labels,
                "annotations": _string_map(alert.get("annotations", {}), f"alerts[{index}].annotations"),
                "startsAt": str(alert.get("startsAt", "")),
                "endsAt": str(alert.get("endsAt", "")),
                "fingerprint": str(alert.get("fingerprint", "")),
            }
        )
    return {
        "receiver": receiver,
        "status": str(payload.get("status", "")),
        "groupKey": str(payload.get("groupKey", "")),
        "groupLabels": _string_map(payload.get("groupLabels", {}), "groupLabels"),
        "externalURL": str(payload.get("externalURL", "")),
        "alerts": parsed,
    }


def _problem(status: int, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": "Invalid notification", "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


async def receive(request: web.Request) -> web.Response:
    try:
        payload = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _problem(400, "the body is not JSON")
    try:
        notification = parse_notification(payload)
    except InvalidNotification as exc:
        return _problem(422, str(exc))
    notification["received_at"] = datetime.now(UTC).isoformat()
    await asyncio.to_thread(request.app[STATE].record, notification)
    return web.json_response({"accepted": len(notification["alerts"])})


def flatten(notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"receiver": n["receiver"], "received_at": n["received_at"], **alert}
        for n in notifications
        for alert in n["alerts"]
    ]


async def list_alerts(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        return _problem(422, f"status must be one of {', '.join(STATUSES)}")
    alertname = request.query.get("alertname")
    alerts = [
        alert
        for alert in flatten(request.app[STATE].notifications)
        if (alertname is None or alert["labels"]["alertname"] == alertname)
        and (status is None or alert["status"] == status)
    ]
    return web.json_response({"items": alerts, "count": len(alerts)})


async def list_notifications(request: web.Request) -> web.Response:
    items = request.app[STATE].notifications
    return web.json_response({"items": items, "count": len(items)})


async def clear(request: web.Request) -> web.Response:
    await asyncio.to_thread(request.app[STATE].clear)
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "service": "alert_sink"})


def create_app(store: Path | None = None) -> web.Application:
    state = SinkState(store)
    state.load()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.router.add_post("/alerts", receive)
    app.router.add_get("/alerts", list_alerts)
    app.router.add_delete("/alerts", clear)
    app.router.add_get("/notifications", list_notifications)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifier.alert_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--store", type=Path, default=None, help="append every notification to this file")
    args = parser.parse_args(argv)
    listening = {
        "message": "alert sink listening",
        "service.name": "alert_sink",
        "http": f"{args.host}:{args.port}",
    }
    print(json.dumps(listening), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(create_app(args.store), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
