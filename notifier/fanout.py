"""Fan-out: one event in, one notification per channel the user has enabled, each dispatched.

Idempotent by construction: notification ids are derived from (event id, channel) and the table
is unique on that pair, so a redelivered event inserts nothing new. It does dispatch again the
rows that are not finished yet (``queued`` or ``sending``), because the first run may have died
between its commit and its dispatch, or in the middle of its inline attempt; a second attempt is
harmless (the claim lets only one through, and a busy row is looked at again after its lease).

``dispatch`` is the host's choice: the workers attempt the delivery inline and publish a deliver
message only when it has to wait (``notifier.delivery.first_attempt``); a plain enqueue works too.
A host that attempts at once passes ``first_attempts`` as well: the insert then claims the new
rows for that attempt, and each claimed row goes to it (no claim of its own).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from pydantic import ValidationError

from common.errors import ServiceError
from common.events import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    ORDER_STATUS_CHANGED,
    USER_REGISTERED,
    Contact,
    Envelope,
)
from notifier import repository

log = structlog.get_logger(__name__)
FANOUT_EVENT_TYPES = frozenset({USER_REGISTERED, ORDER_CREATED, ORDER_STATUS_CHANGED, ORDER_CANCELLED})
UNFINISHED = frozenset({"queued", "sending"})
# Hand a notification to delivery: (notification id, trace id).
Dispatch = Callable[[str, str | None], Awaitable[object]]


@dataclass(frozen=True)
class FirstAttempts:
    """New rows are inserted claimed for ``lease_s`` seconds and handed to ``attempt`` as claimed."""

    lease_s: float
    attempt: Callable[[asyncpg.Record], Awaitable[object]]


class InvalidEvent(ServiceError):
    """The event does not match the contract; retrying cannot fix it."""


def notification_id_for(event_id: str, channel: str) -> str:
    return str(uuid.uuid5(uuid.UUID(event_id), f"notification:{channel}"))


def channels_for(contact: Contact) -> list[tuple[str, str]]:
    """(channel, recipient) pairs: email always; SMS and push only when enabled and possible."""
    planned = [("email", contact.email)]
    if contact.phone and contact.notification_preferences.sms:
        planned.append(("sms", contact.phone))
    if contact.push_token and contact.notification_preferences.push:
        planned.append(("push", contact.push_token))
    return planned


def parse_event(event: object) -> tuple[Envelope, Contact]:
    try:
        envelope = Envelope.model_validate(event)
        if envelope.event_type not in FANOUT_EVENT_TYPES:
            raise InvalidEvent(f"no notifications for event type {envelope.event_type!r}")
        contact = Contact.model_validate(envelope.data.get("user"))
    except ValidationError as exc:
        raise InvalidEvent(f"event does not match the contract: {exc.errors(include_url=False)}") from None
    return envelope, contact


@dataclass(frozen=True)
class _Plan:
    envelope: Envelope
    event_id: str
    rows: list[repository.PlannedNotification]


def _plan(event: object) -> _Plan:
    envelope, contact = parse_event(event)
    event_id = str(envelope.event_id)
    context = {
        **envelope.data,
        "event": {"id": event_id, "type": envelope.event_type, "occurred_at": envelope.occurred_at},
    }
    context_json = json.dumps(context, default=str)
    rows = [
        repository.PlannedNotification(
            id=notification_id_for(event_id, channel),
            event_id=event_id,
            event_type=envelope.event_type,
            channel=channel,
            recipient=recipient,
            user_id=str(contact.id),
            context=context_json,
            trace_id=envelope.trace_id,
        )
        for channel, recipient in channels_for(contact)
    ]
    return _Plan(envelope, event_id, rows)


async def fan_out(
    pool: asyncpg.Pool, event: object, *, dispatch: Dispatch, first_attempts: FirstAttempts | None = None
) -> list[str]:
    """Create the event's notifications and dispatch their delivery; return the ids dispatched."""
    return await fan_out_all(pool, [event], dispatch=dispatch, first_attempts=first_attempts)


async def fan_out_all(
    pool: asyncpg.Pool,
    events: Sequence[object],
    *,
    dispatch: Dispatch,
    first_attempts: FirstAttempts | None = None,
) -> list[str]:
    """``fan_out`` for several events with one insert; they are dispatched in the order given.

    Every event is checked against the contract before anything is written.
    """
    plans = [_plan(event) for event in events]
    inserted = await repository.insert_event_notifications(
        pool,
        [row for plan in plans for row in plan.rows],
        claim_lease_s=None if first_attempts is None else first_attempts.lease_s,
    )
    new_ids = {row["id"] for row in inserted}
    claimed = {row["id"]: row for row in inserted} if first_attempts is not None else {}
    dispatched: list[str] = []
    for plan in plans:
        created = [row.id for row in plan.rows if row.id in new_ids]
        existing = [row.id for row in plan.rows if row.id not in new_ids]
        # Only a redelivered event has existing rows: look at each (one to three rows, rarely).
        pending = created + [i for i in existing if await _unfinished(pool, i)]
        for notification_id in pending:
            claimed_row = claimed.get(notification_id)
            if first_attempts is not None and claimed_row is not None:  # claimed by the insert
                await first_attempts.attempt(claimed_row)
            else:
                await dispatch(notification_id, plan.envelope.trace_id)
        log.info(
            "notifications_fanned_out",
            event_id=plan.event_id,
            event_type=plan.envelope.event_type,
            created=len(created),
            dispatched=len(pending),
            trace_id=plan.envelope.trace_id,
        )
        dispatched += pending
    return dispatched


async def _unfinished(pool: asyncpg.Pool, notification_id: str) -> bool:
    row = await repository.get_notification(pool, notification_id)
    return row is not None and row["status"] in UNFINISHED
