"""The negative control's relay: the outbox relay with publisher confirms off. Never use it.

It is the real ``OutboxRelay`` with one change: ``publish`` hands the message to the channel and
returns at once instead of waiting for the broker's confirm, so the relay marks events published
that the broker may never have received. The suite runs it beside the stack's relays, through a
proxy route that it then turns into a black hole: the events this relay claims are marked
published and are gone, and the suite must report them lost. If it reported nothing, the
suite could not see a loss, and its zeros elsewhere would mean nothing.

    python -m tests.chaos.unsafe_relay DSN AMQP_URL
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from common import amqp
from common.amqp import ConfirmingPublisher
from common.outbox_relay import OutboxRelay

CONNECTED_LINE = "unsafe relay connected"


class UnconfirmedPublisher(ConfirmingPublisher):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._in_flight: set[asyncio.Future[object]] = set()

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str = "application/json"
    ) -> None:
        channel = self._require_channel()
        from pamqp.commands import Basic

        properties = Basic.Properties(delivery_mode=2, message_id=message_id, content_type=content_type)
        # The bug under test: not awaiting the confirm (nor even the write).
        future: asyncio.Future[object] = asyncio.ensure_future(
            channel.basic_publish(
                body, exchange="", routing_key=routing_key, properties=properties, timeout=60
            )
        )
        self._in_flight.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: asyncio.Future[object]) -> None:
        self._in_flight.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it


def unconfirmed_publisher(url: str) -> Any:
    """What the relay publishes with, its confirm step removed.

    The relay takes either the confirming publisher itself or ``DramatiqPublisher``, which wraps
    one (declares the queues, builds the message); in that case only the wrapped one is swapped.
    """
    wrapper = getattr(amqp, "DramatiqPublisher", None)
    if wrapper is None:
        return UnconfirmedPublisher(url)
    publisher = wrapper(url)
    publisher._publisher = UnconfirmedPublisher(url)
    return publisher


async def run(dsn: str, amqp_url: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    publisher = unconfirmed_publisher(amqp_url)
    # Connected (and the queues declared) while the route is healthy: the suite turns it into a
    # black hole only after this line, or the relay would hang in its handshake and claim nothing.
    await (getattr(publisher, "ensure_ready", None) or publisher.connect)()
    relay = OutboxRelay(
        pool,
        publisher,
        service="chaos_unsafe_relay",
        listen_dsn=dsn,
        poll_interval_s=0.2,
    )
    print(CONNECTED_LINE, flush=True)
    try:
        await relay.run()
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
