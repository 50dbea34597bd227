"""The outbox relay as an aiohttp cleanup context: the HTTP side's door to ``common.outbox_relay``
(which, like the rest of the core, imports no aiohttp)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from common.amqp import DramatiqPublisher
from common.contexts import PG_POOL
from common.metrics import SERVICE_NAME
from common.outbox_relay import OutboxRelay
from common.settings import RelaySettings
from common.types import CleanupCtx

log = structlog.get_logger(__name__)


def outbox_relay_ctx(settings: RelaySettings, *, listen_dsn: str) -> CleanupCtx:
    """Run the relay for the app's ``PG_POOL`` database; add it after ``pg_pool_ctx``.

    ``listen_dsn`` is the same database's DSN: LISTEN needs a connection of its own, outside the
    pool. With ``OUTBOX_RELAY_ENABLED=false`` (e.g. a process that should only serve HTTP) it does
    nothing.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.outbox_relay_enabled:
            log.info("outbox_relay_disabled")
            yield
            return
        relay = OutboxRelay(
            app[PG_POOL],
            DramatiqPublisher(settings.amqp_url),
            service=app[SERVICE_NAME],
            listen_dsn=listen_dsn,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            linger_s=settings.outbox_linger_ms / 1000,
            max_backoff_s=settings.outbox_max_backoff_s,
        )
        relay.start()
        yield
        await relay.stop()

    return ctx
