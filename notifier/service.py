"""The rules of the notification API: who sees what, and what an admin may send. No aiohttp here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import structlog
from pydantic import EmailStr as EmailStrType
from pydantic import TypeAdapter, ValidationError

from common.errors import DependencyUnavailable, Forbidden, InvalidInput, NotFound
from common.jwt import Caller
from notifier import repository
from notifier.queue import DeliveryQueue, EnqueueFailed
from notifier.schemas import (
    E164_RE,
    PUSH_TOKEN_RE,
    AttemptOut,
    ListQuery,
    NotificationDetail,
    NotificationOut,
    SendIn,
)
from notifier.templates import TemplateProblem, TemplateRenderer

log = structlog.get_logger(__name__)
EMAIL_ADAPTER: TypeAdapter[str] = TypeAdapter(EmailStrType)


class Users(Protocol):
    """The user look-up the rules need; ``notifier/users.py`` answers it over HTTP (injected,
    so these rules import no HTTP client and a unit test hands in a dict)."""

    async def get(self, user_id: str, bearer_token: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    renderer: TemplateRenderer
    queue: DeliveryQueue
    users: Users


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput("the request does not pass validation", errors=[{"field": field, "message": message}])


def _parse_id(notification_id: str) -> str | None:
    try:
        return str(uuid.UUID(notification_id))
    except ValueError:
        return None


async def list_notifications(
    deps: Deps, caller: Caller, query: ListQuery
) -> tuple[list[NotificationOut], int]:
    if caller.is_admin:
        owner = str(query.user_id) if query.user_id else None
    elif query.user_id is not None and str(query.user_id) != caller.user_id:
        raise Forbidden("only admins may list other users' notifications")
    else:
        owner = caller.user_id
    rows, total = await repository.list_notifications(
        deps.pool,
        user_id=owner,
        status=query.status,
        channel=query.channel,
        limit=query.limit,
        offset=query.offset,
    )
    return [NotificationOut.from_record(row) for row in rows], total


async def get_notification(deps: Deps, caller: Caller, notification_id: str) -> NotificationDetail:
    parsed = _parse_id(notification_id)
    row = await repository.get_notification(deps.pool, parsed) if parsed else None
    # Someone else's notification is indistinguishable from a missing one.
    if row is None or (not caller.is_admin and row["user_id"] != caller.user_id):
        raise NotFound("no such notification")
    attempts = await repository.list_attempts(deps.pool, row["id"])
    return NotificationDetail(
        **NotificationOut.from_record(row).model_dump(),
        attempt_log=[AttemptOut.model_validate(dict(a)) for a in attempts],
    )


def _check_recipient(channel: str, recipient: str) -> str:
    if channel == "email":
        try:
            return EMAIL_ADAPTER.validate_python(recipient)
        except ValidationError:
            raise _invalid("recipient", "must be an email address for the email channel") from None
    if channel == "sms":
        if not E164_RE.match(recipient):
            raise _invalid("recipient", "must be an international number such as +447700900123 for sms")
        return recipient
    if not PUSH_TOKEN_RE.match(recipient):
        raise _invalid("recipient", "must be a device token (8 to 4096 characters, no spaces) for push")
    return recipient


def _recipient_of(user: dict[str, Any], channel: str) -> str:
    preferences = user.get("notification_preferences") or {}
    if channel == "email":
        return str(user["email"])
    field = "phone" if channel == "sms" else "push_token"
    if not user.get(field):
        raise _invalid("user_id", f"the user has no {field.replace('_', ' ')} on file for {channel}")
    if not preferences.get(channel):
        raise _invalid("user_id", f"the user has not enabled {channel} notifications")
    return str(user[field])


async def send(deps: Deps, caller: Caller, body: SendIn, *, trace_id: str | None) -> NotificationOut:
    """Queue one notification (admin only: the caller is checked by the handler)."""
    if not deps.renderer.has(body.template, body.channel):
        raise _invalid("template", f"there is no {body.channel} template named {body.template!r}")
    context = dict(body.context)
    user_id = str(body.user_id) if body.user_id else None
    if body.recipient is not None:
        recipient = _check_recipient(body.channel, body.recipient)
    else:
        assert user_id is not None  # SendIn requires one of the two
        user = await deps.users.get(user_id, caller.token)
        if user is None:
            raise _invalid("user_id", "no such user")
        recipient = _recipient_of(user, body.channel)
        context["user"] = user
    try:
        # Render now so a context that does not fit the template is the admin's 422, not a
        # notification that fails later where nobody is looking.
        deps.renderer.render(body.template, body.channel, context)
    except TemplateProblem as exc:
        raise _invalid("context", str(exc)) from None

    notification_id = str(uuid.uuid4())
    await repository.insert_notification(
        deps.pool,
        notification_id=notification_id,
        event_id=None,
        event_type=None,
        template=body.template,
        channel=body.channel,
        user_id=user_id,
        recipient=recipient,
        context=context,
        trace_id=trace_id,
        created_by=caller.user_id,
    )
    try:
        await deps.queue.enqueue_delivery(notification_id, trace_id=trace_id)
    except EnqueueFailed as exc:
        # Committed but not queued: mark it so nobody waits for it, and let the admin retry.
        await repository.mark_unqueued(deps.pool, notification_id, f"could not be queued: {exc}")
        raise DependencyUnavailable("the message queue is unavailable; nothing was sent") from None
    log.info("notification_queued", notification_id=notification_id, channel=body.channel)
    row = await repository.get_notification(deps.pool, notification_id)
    assert row is not None
    return NotificationOut.from_record(row)
