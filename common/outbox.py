"""Writing to the transactional outbox. The relay that publishes it lives in ``outbox_relay``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.db import Connection, Executor
from common.events import new_event
from common.logging import current_trace_id

OUTBOX_MIGRATIONS = ("outbox", Path(__file__).parent / "sql" / "outbox")
OUTBOX_CHANNEL = "outbox_events"

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
    WHERE event_id = $1 AND published_at IS NULL
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


async def mark_handed_on(conn: Executor, event_id: str) -> None:
    """A held event's consumers have run: the relay has nothing left to do for it."""
    await conn.execute(HANDED_ON_SQL, event_id)


async def take_over_held(conn: Executor, aggregate_id: str, *, hold_s: float) -> list[dict[str, Any]]:
    """The aggregate's held events, held anew for the caller (who hands them on, then marks them)."""
    rows = await conn.fetch(TAKE_OVER_HELD_SQL, aggregate_id, hold_s)
    return [json.loads(row["payload"]) for row in sorted(rows, key=lambda row: row["id"])]
