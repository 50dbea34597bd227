"""The whole URL map of order_api."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from common.web import add_document_routes
from order_api import handlers

UUID_PATTERN = "{id:[0-9a-fA-F-]{36}}"
OPENAPI_PATH = Path(__file__).parent / "openapi.yaml"


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/orders", handlers.list_orders)
    router.add_post("/api/orders", handlers.create_order)
    router.add_get(f"/api/orders/{UUID_PATTERN}", handlers.get_order)
    router.add_put(f"/api/orders/{UUID_PATTERN}/status", handlers.change_status)
    router.add_delete(f"/api/orders/{UUID_PATTERN}", handlers.cancel_order)
    add_document_routes(router, OPENAPI_PATH)
