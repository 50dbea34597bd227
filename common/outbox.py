"""Writing to the transactional outbox. The relay that publishes it lives in ``outbox_relay``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import structlog

from common.db import Connection, Executor
from common.events import new_event
from common.failures import as_dependency_failure, describe
from common.logging import current_trace_id

log = structlog.get_logger(__name__)
OUTBOX_MIGRATIONS = ("outbox", Path(__file__).parent / "sql" / "outbox")
OUTBOX_CHANNEL = "outbox_events"
MARKS_RETRY_S = 2.0

# The row and its NOTIFY in one round trip; NOTIFY is transactional too: the relay wakes only
# once the row is visible.
INSERT_OUTBOX_EVENT_SQL = """
    WITH added AS (
        INSERT INTO outbox_events (event_id, event_type, aggregate_id, payload)
        VALUES ($1, $2, $3, $4::jsonb)
        RETURNING event_type
    )
    SELECT pg_notify($5, added.event_type) FROM added
"""
# A held event (``held_until``: its producer hands it to its consumers itself, and the relay
# leaves it alone until then; order_api.repository.DECIDE_PENDING_SQL writes one).
# The producer has handed its held event on; one the relay published meanwhile stays as it is.
HANDED_ON_SQL = """
    UPDATE outbox_events SET published_at = now(), attempts = attempts + 1, held_until = NULL
    WHERE event_id = ANY($1::uuid[]) AND published_at IS NULL
"""
# A producer's run that died after its commit left held events: the next run holds them anew and
# hands them on itself (a relay that holds one already, its hold over, is waited for, then left).
TAKE_OVER_HELD_SQL = """
    UPDATE outbox_events SET held_until = now() + make_interval(secs => $2::float8)
    WHERE aggregate_id = $1 AND published_at IS NULL AND held_until IS NOT NULL
    RETURNING id, payload::text AS payload
"""


async def add_event(
    conn: Connection,
    event_type: str,
    aggregate_id: str,
    data: dict[str, Any],
    *,
    producer: str,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """Record an event in the caller's transaction; it is published only if that commits."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox events must be written inside the transaction of the change")
    event = new_event(event_type, data, producer=producer, trace_id=trace_id or current_trace_id())
    await conn.execute(
        INSERT_OUTBOX_EVENT_SQL,
        event["event_id"],
        event_type,
        aggregate_id,
        json.dumps(event, default=str),
        OUTBOX_CHANNEL,
    )
    return event


async def mark_handed_on(conn: Executor, *event_ids: str) -> None:
    """Held events whose consumers have run: the relay has nothing left to do for them."""
    await conn.execute(HANDED_ON_SQL, list(event_ids))


class HandedOnMarks:
    """Marks held events handed on, those of a short window together in one statement.

    The mark was a statement of its own per order (issue 11). A mark that is never written (the
    process ends before its window closes, the database is away) costs no message and sends
    nothing twice: the relay publishes the event once its hold is over, and its consumers find
    their work done. Until the mark, later events of the same aggregate wait behind the event.
    """

    def __init__(
        self, pool: Executor, *, linger_s: float, retry_s: float = MARKS_RETRY_S, max_pending: int = 10_000
    ) -> None:
        self._pool = pool
        self._linger_s = linger_s
        self._retry_s = retry_s
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._flusher: asyncio.Task[None] | None = None

    def add(self, event_id: str) -> None:
        if len(self._pending) >= self._max_pending:
            return  # the database has been away for long: the relay covers what is dropped
        self._pending.append(event_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run())

    async def _run(self) -> None:
        delay = self._linger_s
        while self._pending:
            await asyncio.sleep(delay)
            delay = self._linger_s if await self.flush() else self._retry_s

    async def flush(self) -> bool:
        """Write the pending marks; False if they could not be (they are kept for the next try)."""
        batch, self._pending = self._pending, []
        if not batch:
            return True
        try:
            await mark_handed_on(self._pool, *batch)
        except asyncio.CancelledError:
            self._pending[:0] = batch  # aclose writes them
            raise
        except Exception as exc:
            if as_dependency_failure(exc) is None:
                log.exception("handed_on_marks_failed", events=len(batch))
            else:
                log.warning("handed_on_marks_failed", events=len(batch), error=describe(exc))
            self._pending[:0] = batch[: self._max_pending - len(self._pending)]
            return False
        return True

    async def aclose(self) -> None:
        """Write what is pending now (a worker that stops)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()


async def take_over_held(conn: Executor, aggregate_id: str, *, hold_s: float) -> list[dict[str, Any]]:
    """The aggregate's held events, held anew for the caller (who hands them on, then marks them)."""
    rows = await conn.fetch(TAKE_OVER_HELD_SQL, aggregate_id, hold_s)
    return [json.loads(row["payload"]) for row in sorted(rows, key=lambda row: row["id"])]
