"""Fan-out: one event in, one notification per channel the user has enabled, each enqueued.

Idempotent by construction: notification ids are derived from (event id, channel) and the table
is unique on that pair, so a redelivered event inserts nothing new. It does enqueue again the
rows nobody has picked up yet, because the first run may have died between its commit and its
enqueue; a duplicate deliver message is harmless (the claim lets only one attempt through).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from common.events import ORDER_CANCELLED, ORDER_CREATED, ORDER_STATUS_CHANGED, USER_REGISTERED
from notifier import repository

log = structlog.get_logger(__name__)
FANOUT_EVENT_TYPES = frozenset({USER_REGISTERED, ORDER_CREATED, ORDER_STATUS_CHANGED, ORDER_CANCELLED})
Enqueue = Callable[[str], Awaitable[None]]


class InvalidEvent(Exception):
    """The event does not match the contract; retrying cannot fix it."""


class Preferences(BaseModel):
    email: bool = True
    sms: bool = False
    push: bool = False


class Contact(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: uuid.UUID
    email: str
    name: str
    phone: str | None = None
    notification_preferences: Preferences = Preferences()
    push_token: str | None = None


class Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_id: uuid.UUID
    event_type: str
    occurred_at: str
    trace_id: str | None = None
    data: dict[str, Any]


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


async def fan_out(pool: asyncpg.Pool, event: object, *, enqueue: Enqueue) -> list[str]:
    """Create the event's notifications and enqueue their delivery; return the ids enqueued."""
    envelope, contact = parse_event(event)
    event_id = str(envelope.event_id)
    context = {
        **envelope.data,
        "event": {"id": event_id, "type": envelope.event_type, "occurred_at": envelope.occurred_at},
    }
    created = []
    async with pool.acquire() as conn, conn.transaction():
        for channel, recipient in channels_for(contact):
            inserted = await repository.insert_notification(
                conn,
                notification_id=notification_id_for(event_id, channel),
                event_id=event_id,
                event_type=envelope.event_type,
                template=envelope.event_type,
                channel=channel,
                user_id=str(contact.id),
                recipient=recipient,
                context=context,
                trace_id=envelope.trace_id,
            )
            if inserted:
                created.append(channel)
    pending = await repository.unclaimed_for_event(pool, event_id)
    for notification_id in pending:
        await enqueue(notification_id)
    log.info(
        "notifications_fanned_out",
        event_id=event_id,
        event_type=envelope.event_type,
        created=created,
        enqueued=len(pending),
        trace_id=envelope.trace_id,
    )
    return pending
