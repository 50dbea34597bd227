"""Typed keys for what order_api keeps on its application."""

from __future__ import annotations

from aiohttp import web

from order_api.service import Deps
from order_api.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
DEPS: web.AppKey[Deps] = web.AppKey("deps", Deps)
