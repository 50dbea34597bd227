"""Typed keys for what user_api keeps on its application."""

from __future__ import annotations

from aiohttp import web

from user_api.service import Deps

DEPS: web.AppKey[Deps] = web.AppKey("deps", Deps)
TRUSTED_PROXIES: web.AppKey[frozenset[str]] = web.AppKey("trusted_proxies", frozenset)
