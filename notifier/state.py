"""Typed keys for what the notification API keeps on its application."""

from __future__ import annotations

from aiohttp import web

from notifier.service import Deps

DEPS: web.AppKey[Deps] = web.AppKey("deps", Deps)
