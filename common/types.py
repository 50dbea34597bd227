"""Type aliases for aiohttp shapes that aiohttp does not name itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
