"""Every SQL statement of the notification service. Functions take a connection or pool first."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg

from common.db import Connection, Executor

NOTIFICATION_COLUMNS = """
    id::text AS id, event_id::text AS event_id, event_type, template, channel, user_id::text AS user_id,
    recipient, context, trace_id, created_by::text AS created_by, status, attempts, last_error,
    provider_message_id, claimed_at, lease_until, created_at, updated_at, sent_at, resends, resent_at
"""
# The same columns qualified, for statements that join or update with an alias.
N_COLUMNS = """
    n.id::text AS id, n.event_id::text AS event_id, n.event_type, n.template, n.channel,
    n.user_id::text AS user_id, n.recipient, n.context, n.trace_id, n.created_by::text AS created_by,
    n.status, n.attempts, n.last_error, n.provider_message_id, n.claimed_at, n.lease_until,
    n.created_at, n.updated_at, n.sent_at, n.resends, n.resent_at
"""

INSERT_NOTIFICATION_SQL = """
    INSERT INTO notifications
        (id, event_id, event_type, template, channel, user_id, recipient, context, trace_id, created_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
    ON CONFLICT (event_id, channel) DO NOTHING
    RETURNING id::text
"""

# One event's notifications (one row per channel) in one statement, without BEGIN/COMMIT.
# The planned rows of one or more events (one array per column, a row per element): an order's
# two events are fanned out by one statement (issue 11).
PLANNED = """
    unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[],
           $8::text[]) AS planned (id, event_id, event_type, channel, recipient, user_id, context,
                                   trace_id)
"""
INSERT_EVENT_NOTIFICATIONS_SQL = f"""
    INSERT INTO notifications
        (id, event_id, event_type, template, channel, user_id, recipient, context, trace_id)
    SELECT planned.id, planned.event_id, planned.event_type, planned.event_type, planned.channel,
           planned.user_id, planned.recipient, planned.context::jsonb, planned.trace_id
    FROM {PLANNED}
    ON CONFLICT (event_id, channel) DO NOTHING
    RETURNING id::text
"""

# The same, each new row taken for its first attempt in the insert itself (``sending``, attempt
# 1, a lease of $9 seconds), as the claim would: the workers' fan-out attempts the delivery at
# once, and the claim that followed the insert was a round trip per notification (issue 11).
INSERT_CLAIMED_EVENT_NOTIFICATIONS_SQL = f"""
    INSERT INTO notifications
        (id, event_id, event_type, template, channel, user_id, recipient, context, trace_id,
         status, attempts, claimed_at, lease_until)
    SELECT planned.id, planned.event_id, planned.event_type, planned.event_type, planned.channel,
           planned.user_id, planned.recipient, planned.context::jsonb, planned.trace_id,
           'sending', 1, now(), now() + make_interval(secs => $9::float8)
    FROM {PLANNED}
    ON CONFLICT (event_id, channel) DO NOTHING
    RETURNING {NOTIFICATION_COLUMNS}
"""

# Rows a fan-out created but no worker has picked up yet: the ones whose deliver message may
# have been lost between the insert and the enqueue (a redelivered fan-out enqueues them again).
UNCLAIMED_FOR_EVENT_SQL = """
    SELECT id::text FROM notifications
    WHERE event_id = $1 AND status = 'queued' AND attempts = 0
    ORDER BY channel
"""

GET_NOTIFICATION_SQL = f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1"

# Claim a row for one attempt. A `sending` row whose lease ran out was left by a dead worker;
# a `dead` row is taken only when the message is an operator's replay ($3); a `held` row only by
# a process whose template set ($4) is not the one it was held with.
CLAIM_SQL = f"""
    WITH current AS (
        SELECT id, status AS previous_status, claimed_at AS previous_claimed_at
        FROM notifications WHERE id = $1 FOR UPDATE
    ), claimed AS (
        UPDATE notifications n
        SET status = 'sending', attempts = n.attempts + 1, claimed_at = now(),
            lease_until = now() + make_interval(secs => $2::float8), updated_at = now()
        FROM current
        WHERE n.id = current.id
          AND (n.status = 'queued'
               OR (n.status = 'sending' AND n.lease_until < now())
               OR (n.status = 'dead' AND $3::boolean)
               OR (n.status = 'held' AND n.held_fingerprint IS DISTINCT FROM $4::text))
        RETURNING {N_COLUMNS}, current.previous_status, current.previous_claimed_at
    ), interrupted AS (
        -- The attempt before this one never finished: its worker died holding the lease.
        INSERT INTO notification_attempts
            (notification_id, attempt, started_at, outcome, error, provider_message_id)
        SELECT claimed.id::uuid, claimed.attempts - 1, claimed.previous_claimed_at, 'interrupted',
               'the worker stopped before finishing; its lease expired and the attempt was taken over',
               NULL
        FROM claimed WHERE claimed.previous_status = 'sending'
        ON CONFLICT (notification_id, attempt) DO NOTHING
    )
    SELECT * FROM claimed
"""

LEASE_REMAINING_SQL = """
    SELECT GREATEST(0, EXTRACT(EPOCH FROM (lease_until - now())))::float8
    FROM notifications WHERE id = $1 AND status = 'sending'
"""

# Finishing an attempt records it and moves the row on in one statement (one round trip, no
# BEGIN/COMMIT): sent, permanent_error -> failed, held (with the failing set's fingerprint),
# transient_error -> queued again. The move is fenced on the attempt number: a worker whose
# lease was taken over must not overwrite the outcome of the attempt that replaced it; the
# attempt itself is recorded either way.
FINISH_ATTEMPT_SQL = """
    WITH recorded AS (
        INSERT INTO notification_attempts
            (notification_id, attempt, started_at, outcome, error, provider_message_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (notification_id, attempt) DO NOTHING
    )
    UPDATE notifications
    SET status = CASE $4::text WHEN 'sent' THEN 'sent' WHEN 'permanent_error' THEN 'failed'
                               WHEN 'held' THEN 'held' ELSE 'queued' END,
        provider_message_id = CASE WHEN $4 = 'sent' THEN $6 ELSE provider_message_id END,
        sent_at = CASE WHEN $4 = 'sent' THEN now() ELSE sent_at END,
        last_error = CASE WHEN $4 = 'sent' THEN NULL ELSE $5 END,
        held_fingerprint = CASE WHEN $4 = 'held' THEN $7 ELSE held_fingerprint END,
        release_requested_at = CASE WHEN $4 = 'held' THEN NULL ELSE release_requested_at END,
        lease_until = NULL, updated_at = now()
    WHERE id = $1 AND status = 'sending' AND attempts = $2
    RETURNING id
"""
FINISH_OUTCOMES = frozenset({"sent", "permanent_error", "held", "transient_error"})

MARK_DEAD_SQL = """
    UPDATE notifications
    SET status = 'dead', last_error = COALESCE($2, last_error), lease_until = NULL, updated_at = now()
    WHERE id = $1 AND status IN ('queued', 'sending')
    RETURNING id
"""

MARK_UNQUEUED_SQL = """
    UPDATE notifications SET status = 'failed', last_error = $2, updated_at = now()
    WHERE id = $1 AND status = 'queued' AND attempts = 0
"""

# Held rows that a good template set other than their own may deliver now. Stamping
# release_requested_at in the same statement lets one process release a row, once per
# $2 seconds; a deliver message lost after the stamp is made up for by a later sweep.
RELEASE_HELD_SQL = """
    UPDATE notifications n SET release_requested_at = now()
    FROM (
        SELECT id FROM notifications
        WHERE status = 'held' AND held_fingerprint IS DISTINCT FROM $1
          AND (release_requested_at IS NULL
               OR release_requested_at < now() - make_interval(secs => $2::float8))
        ORDER BY created_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE n.id = due.id
    RETURNING n.id::text AS id, n.trace_id
"""

COUNT_HELD_SQL = "SELECT count(*) FROM notifications WHERE status = 'held'"

# An admin's resend: a failed or dead row goes back to `queued` (same row, so the same Message-ID
# and Idempotency-Key); the next attempt is numbered after the earlier ones.
RESENDABLE = ("failed", "dead")
RESEND_SQL = """
    WITH current AS (
        SELECT id, status AS previous_status FROM notifications WHERE id = $1 FOR UPDATE
    )
    UPDATE notifications n
    SET status = 'queued', lease_until = NULL, resends = n.resends + 1, resent_at = now(),
        resent_by = $2, updated_at = now()
    FROM current
    WHERE n.id = current.id AND n.status IN ('failed', 'dead')
    RETURNING n.id::text AS id, n.trace_id, current.previous_status
"""

RESEND_FILTER = """
    WHERE status = ANY($1::text[]) AND status IN ('failed', 'dead')
      AND ($2::text IS NULL OR template = $2)
      AND ($3::text IS NULL OR channel = $3)
      AND ($4::timestamptz IS NULL OR created_at >= $4)
      AND ($5::timestamptz IS NULL OR created_at < $5)
"""
RESENDABLE_SQL = f"""
    SELECT id::text AS id FROM notifications {RESEND_FILTER}
    ORDER BY created_at, id LIMIT $6
"""
RESEND_MATCHING_SQL = f"""
    WITH picked AS (
        SELECT id, status AS previous_status FROM notifications {RESEND_FILTER}
        ORDER BY created_at, id LIMIT $6
        FOR UPDATE SKIP LOCKED
    )
    UPDATE notifications n
    SET status = 'queued', lease_until = NULL, resends = n.resends + 1, resent_at = now(),
        resent_by = $7, updated_at = now()
    FROM picked
    WHERE n.id = picked.id
    RETURNING n.id::text AS id, n.trace_id, picked.previous_status, n.created_at
"""

# The deliver message of a resend could not be published: back to what it was, unless a worker
# has already taken it (then the message did get through).
UNDO_RESEND_SQL = """
    UPDATE notifications
    SET status = $2, resends = resends - 1, updated_at = now()
    WHERE id = $1 AND status = 'queued'
"""

LIST_FILTER = """
    WHERE ($1::uuid IS NULL OR user_id = $1)
      AND ($2::text IS NULL OR status = $2)
      AND ($3::text IS NULL OR channel = $3)
"""
LIST_NOTIFICATIONS_SQL = f"""
    SELECT {NOTIFICATION_COLUMNS} FROM notifications {LIST_FILTER}
    ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5
"""
COUNT_NOTIFICATIONS_SQL = f"SELECT count(*) FROM notifications {LIST_FILTER}"

LIST_ATTEMPTS_SQL = """
    SELECT attempt, started_at, finished_at, outcome, error, provider_message_id
    FROM notification_attempts WHERE notification_id = $1 ORDER BY attempt
"""


def context_of(row: asyncpg.Record) -> dict[str, Any]:
    """The template context stored on a row (asyncpg hands jsonb over as text)."""
    value = row["context"]
    decoded = json.loads(value) if isinstance(value, str) else value
    return decoded if isinstance(decoded, dict) else {}


async def insert_notification(
    db: Executor,
    *,
    notification_id: str,
    event_id: str | None,
    event_type: str | None,
    template: str,
    channel: str,
    user_id: str | None,
    recipient: str,
    context: dict[str, Any],
    trace_id: str | None,
    created_by: str | None = None,
) -> bool:
    """True if inserted; False if this (event, channel) already has its notification."""
    inserted = await db.fetchval(
        INSERT_NOTIFICATION_SQL,
        notification_id,
        event_id,
        event_type,
        template,
        channel,
        user_id,
        recipient,
        json.dumps(context, default=str),
        trace_id,
        created_by,
    )
    return inserted is not None


@dataclass(frozen=True)
class PlannedNotification:
    """A notification an event asks for; ``context`` is its template context as JSON text."""

    id: str
    event_id: str
    event_type: str
    channel: str
    recipient: str
    user_id: str
    context: str
    trace_id: str | None


# In the order of PLANNED's arrays.
PLANNED_FIELDS = tuple(field.name for field in fields(PlannedNotification))


async def insert_event_notifications(
    db: Executor, planned: Sequence[PlannedNotification], *, claim_lease_s: float | None = None
) -> list[asyncpg.Record]:
    """Insert the planned rows (of any number of events) in one statement; the rows that were new.

    With ``claim_lease_s`` they are inserted claimed for a first attempt and come back whole, as
    ``claim`` returns a row; without, each comes back as its ``id``.
    """
    columns: list[Any] = [[getattr(row, field) for row in planned] for field in PLANNED_FIELDS]
    if claim_lease_s is None:
        rows: list[asyncpg.Record] = await db.fetch(INSERT_EVENT_NOTIFICATIONS_SQL, *columns)
    else:
        rows = await db.fetch(INSERT_CLAIMED_EVENT_NOTIFICATIONS_SQL, *columns, claim_lease_s)
    return rows


async def unclaimed_for_event(db: Executor, event_id: str) -> list[str]:
    return [row["id"] for row in await db.fetch(UNCLAIMED_FOR_EVENT_SQL, event_id)]


async def get_notification(db: Executor, notification_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(GET_NOTIFICATION_SQL, notification_id)
    return row


async def claim(
    conn: Connection,
    notification_id: str,
    *,
    lease_s: float,
    revive_dead: bool,
    templates_fingerprint: str | None = None,
) -> asyncpg.Record | None:
    """Take the row for one attempt (status `sending`, attempts + 1), or None if not claimable.

    A held row is taken only when ``templates_fingerprint`` (the set the caller renders with)
    differs from the set it was held with. Taking over an expired lease records the interrupted
    attempt in the same statement.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        CLAIM_SQL, notification_id, lease_s, revive_dead, templates_fingerprint
    )
    return row


async def lease_remaining_s(db: Executor, notification_id: str) -> float | None:
    remaining: float | None = await db.fetchval(LEASE_REMAINING_SQL, notification_id)
    return remaining


async def finish_attempt(
    conn: Connection,
    row: asyncpg.Record,
    *,
    outcome: str,
    error: str | None = None,
    provider_message_id: str | None = None,
    held_fingerprint: str | None = None,
) -> bool:
    """Record the attempt and move the row on; False if the claim had been taken over meanwhile."""
    if outcome not in FINISH_OUTCOMES:
        raise ValueError(f"unknown attempt outcome {outcome!r}")
    moved = await conn.fetchval(
        FINISH_ATTEMPT_SQL,
        row["id"],
        row["attempts"],
        row["claimed_at"],
        outcome,
        error,
        provider_message_id,
        held_fingerprint,
    )
    return moved is not None


async def mark_dead(db: Executor, notification_id: str, error: str | None) -> bool:
    return await db.fetchval(MARK_DEAD_SQL, notification_id, error) is not None


async def mark_unqueued(db: Executor, notification_id: str, error: str) -> None:
    await db.execute(MARK_UNQUEUED_SQL, notification_id, error)


async def list_notifications(
    db: Executor,
    *,
    user_id: str | None,
    status: str | None,
    channel: str | None,
    limit: int,
    offset: int,
) -> tuple[list[asyncpg.Record], int]:
    rows = await db.fetch(LIST_NOTIFICATIONS_SQL, user_id, status, channel, limit, offset)
    total: int = await db.fetchval(COUNT_NOTIFICATIONS_SQL, user_id, status, channel)
    return list(rows), total


async def list_attempts(db: Executor, notification_id: str) -> list[asyncpg.Record]:
    return list(await db.fetch(LIST_ATTEMPTS_SQL, notification_id))


async def release_held(
    db: Executor, templates_fingerprint: str, *, retry_after_s: float, limit: int
) -> list[asyncpg.Record]:
    """Stamp and return (id, trace_id) of held rows the set ``templates_fingerprint`` may deliver."""
    return list(await db.fetch(RELEASE_HELD_SQL, templates_fingerprint, retry_after_s, limit))


async def count_held(db: Executor) -> int:
    count: int = await db.fetchval(COUNT_HELD_SQL)
    return count


async def resend(db: Executor, notification_id: str, *, resent_by: str | None) -> asyncpg.Record | None:
    """Requeue a failed or dead row: (id, trace_id, previous_status), or None if it is neither."""
    row: asyncpg.Record | None = await db.fetchrow(RESEND_SQL, notification_id, resent_by)
    return row


async def resendable(
    db: Executor,
    *,
    statuses: list[str],
    template: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
) -> list[str]:
    rows = await db.fetch(RESENDABLE_SQL, statuses, template, channel, created_from, created_to, limit)
    return [row["id"] for row in rows]


async def resend_matching(
    db: Executor,
    *,
    statuses: list[str],
    template: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    resent_by: str | None,
) -> list[asyncpg.Record]:
    rows = await db.fetch(
        RESEND_MATCHING_SQL, statuses, template, channel, created_from, created_to, limit, resent_by
    )
    return sorted(rows, key=lambda row: (row["created_at"], row["id"]))


async def undo_resend(db: Executor, notification_id: str, previous_status: str) -> None:
    await db.execute(UNDO_RESEND_SQL, notification_id, previous_status)
