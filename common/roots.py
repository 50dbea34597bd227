"""The composition roots' one rule for shared resources: what is handed in is used as is.

``create_app(settings, *, pool=None, redis=None, …)`` in every service: a resource passed in (a
test's rolled-back connection, a fake) is put on the app and never opened or closed by it;
one that is not is opened by its cleanup context, as in production. The readiness check
belongs to whoever opened the resource, so a handed-in one registers none.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from common.types import CleanupCtx

T = TypeVar("T")


def given_or_opened(app: web.Application, key: web.AppKey[T], given: T | None, opener: CleanupCtx) -> None:
    """``app[key]`` is ``given``; or, when nothing is given, whatever ``opener`` opens at start-up."""
    if given is None:
        app.cleanup_ctx.append(opener)
    else:
        app[key] = given
