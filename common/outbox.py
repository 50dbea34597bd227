"""Writing to the transactional outbox. The relay that publishes it lives in ``outbox_relay``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.db import Connection
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
