"""The whole URL map of user_api."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from common.web import add_document_routes
from user_api import handlers

UUID_PATTERN = "{id:[0-9a-fA-F-]{36}}"
OPENAPI_PATH = Path(__file__).parent / "openapi.yaml"


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/api/auth/register", handlers.register)
    router.add_post("/api/auth/login", handlers.login)
    router.add_post("/api/auth/refresh", handlers.refresh)
    router.add_post("/api/auth/logout", handlers.logout)
    router.add_get("/api/users", handlers.list_users)
    router.add_get("/api/users/me", handlers.me)
    router.add_get(f"/api/users/{UUID_PATTERN}", handlers.get_user)
    router.add_put(f"/api/users/{UUID_PATTERN}", handlers.update_user)
    router.add_delete(f"/api/users/{UUID_PATTERN}", handlers.delete_user)
    add_document_routes(router, OPENAPI_PATH)
