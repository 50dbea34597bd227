"""The whole URL map of the notification API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from common.web import add_document_routes
from notifier import handlers

UUID_PATTERN = "{id:[0-9a-fA-F-]{36}}"
OPENAPI_PATH = Path(__file__).parent / "openapi.yaml"


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/notifications", handlers.list_notifications)
    router.add_post("/api/notifications/send", handlers.send_notification)
    router.add_get(f"/api/notifications/{UUID_PATTERN}", handlers.get_notification)
    router.add_post(f"/api/notifications/{UUID_PATTERN}/resend", handlers.resend_notification)
    router.add_post("/api/notifications/resend", handlers.resend_matching)
    add_document_routes(router, OPENAPI_PATH)
