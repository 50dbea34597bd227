"""Resending failed or dead notifications (an admin's call, from the API or the CLI). No aiohttp.

A resend puts the same row back to `queued` and enqueues a deliver message: the next attempt is
numbered after the earlier ones in the attempt log, and the email carries the same Message-ID
(SMS and push the same Idempotency-Key), so it is still one notification per (event, channel).
Only a `failed` or `dead` row can be resent, and the status change is one guarded UPDATE: two
admins resending at once make one resend and one 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import structlog

from common.errors import Conflict, DependencyUnavailable, NotFound
from notifier import repository
from notifier.queue import DeliveryQueue, EnqueueFailed
from notifier.schemas import NotificationOut, ResendMatching, ResendResult

log = structlog.get_logger(__name__)


def _parse_id(notification_id: str) -> str | None:
    try:
        return str(uuid.UUID(notification_id))
    except ValueError:
        return None


async def _enqueue(pool: asyncpg.Pool, queue: DeliveryQueue, rows: Sequence[asyncpg.Record]) -> None:
    for done, row in enumerate(rows):
        try:
            await queue.enqueue_delivery(row["id"], trace_id=row["trace_id"])
        except EnqueueFailed:
            # Not queued: put these rows back as they were, so they stay resendable.
            for undone in rows[done:]:
                await repository.undo_resend(pool, undone["id"], undone["previous_status"])
            raise DependencyUnavailable(
                f"the message queue is unavailable; {done} of {len(rows)} notification(s) were resent",
                dependency="rabbitmq",
            ) from None


async def resend(
    pool: asyncpg.Pool, queue: DeliveryQueue, notification_id: str, *, resent_by: str | None
) -> NotificationOut:
    """Requeue one failed or dead notification (the caller has checked the admin role)."""
    parsed = _parse_id(notification_id)
    row = await repository.resend(pool, parsed, resent_by=resent_by) if parsed else None
    if row is None:
        current = await repository.get_notification(pool, parsed) if parsed else None
        if current is None:
            raise NotFound("no such notification")
        raise Conflict(f"only failed or dead notifications can be resent; this one is {current['status']}")
    await _enqueue(pool, queue, [row])
    log.info(
        "notification_resent",
        notification_id=row["id"],
        previous_status=row["previous_status"],
        resent_by=resent_by,
    )
    current = await repository.get_notification(pool, row["id"])
    assert current is not None  # rows are never deleted
    return NotificationOut.from_record(current)


async def resend_matching(
    pool: asyncpg.Pool, queue: DeliveryQueue, query: ResendMatching, *, resent_by: str | None
) -> ResendResult:
    """Requeue (or with ``dry_run`` only list) the matching failed/dead notifications."""
    if query.dry_run:
        ids = await repository.resendable(
            pool,
            statuses=list(query.status),
            template=query.template,
            channel=query.channel,
            created_from=query.created_from,
            created_to=query.created_to,
            limit=query.limit,
        )
        return ResendResult(dry_run=True, count=len(ids), ids=ids)
    rows = await repository.resend_matching(
        pool,
        statuses=list(query.status),
        template=query.template,
        channel=query.channel,
        created_from=query.created_from,
        created_to=query.created_to,
        limit=query.limit,
        resent_by=resent_by,
    )
    await _enqueue(pool, queue, rows)
    log.info("notifications_resent", count=len(rows), resent_by=resent_by, **_loggable(query))
    return ResendResult(dry_run=False, count=len(rows), ids=[row["id"] for row in rows])


def _loggable(query: ResendMatching) -> dict[str, object]:
    return {
        "statuses": list(query.status),
        "template": query.template,
        "channel": query.channel,
        "created_from": query.created_from.isoformat() if query.created_from else None,
        "created_to": query.created_to.isoformat() if query.created_to else None,
    }
