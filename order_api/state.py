"""Typed keys for what order_api keeps on its application."""

from __future__ import annotations

from aiohttp import web

from order_api.service import Deps

DEPS: web.AppKey[Deps] = web.AppKey("deps", Deps)
