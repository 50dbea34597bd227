"""Delivering one notification: claim it, render it, send it, record the attempt.

Exactly one effect per notification rests on three things: the claim (only a `queued` row, or a
`sending` row whose lease has expired, can be taken; the attempt number fences the finish), the
status check (a `sent` or `failed` row is never sent again), and, for the one window no database
can close — the provider accepted the message and the worker died before recording it — a stable
Message-ID / Idempotency-Key per notification.

A template error is never the notification's fault: the row is `held` with the fingerprint of the
template set that failed it, and is claimable again only by a process serving another set
(``notifier.held`` releases such rows once a good set is loaded). Nothing was sent before the
render, so a held row has had no effect yet.

The policy a host (the workers) applies to an attempt's outcome is here too, so that the host
stays generic: ``retry_for`` (a transient failure is retried after its delay; a busy row is
looked at again once the lease has run out, never counted against it), ``PERMANENT`` (straight to
the dead-letter queue), ``retries_exhausted`` (the row becomes ``dead``) and ``first_attempt``
(the fan-out's inline attempt, which leaves a deliver message only when it has to wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog
from prometheus_client import Counter

from common.errors import ServiceError
from common.failures import as_dependency_failure
from common.logging import bind_trace_id
from notifier import repository
from notifier.channels import Outgoing, PermanentFailure, Sender, TransientFailure
from notifier.templates import TemplateProblem, TemplateRenderer

log = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "notification_deliveries_total", "Delivery attempts by channel and outcome", ["channel", "outcome"]
)


class NotificationBusy(ServiceError):
    """Another attempt holds the row's lease; look again once it has run out."""

    def __init__(self, notification_id: str, retry_after_s: float) -> None:
        super().__init__(f"notification {notification_id} is being sent by another attempt")
        self.retry_after_s = retry_after_s


class NotificationDead(ServiceError):
    """The row is `dead` and this message is not an operator's replay: it belongs in the DLQ."""


@dataclass(frozen=True)
class DeliveryDeps:
    pool: asyncpg.Pool
    renderer: TemplateRenderer
    senders: Mapping[str, Sender]
    lease_s: float


async def deliver(
    deps: DeliveryDeps,
    notification_id: str,
    *,
    replay: bool = False,
    claimed: asyncpg.Record | None = None,
) -> str:
    """Deliver once; return the resulting status ("sent", "failed", "held") or why nothing was done.

    ``claimed``: the row, claimed already (the fan-out inserts its new rows claimed).
    Raises ``TransientFailure`` after recording a retryable failure (the caller retries later),
    ``NotificationBusy`` while another attempt holds the lease, ``NotificationDead`` for a dead
    row outside a replay.
    """
    bound = log.bind(notification_id=notification_id)
    row = claimed if claimed is not None else await _claim(deps, notification_id, replay=replay)
    if row is None:
        existing = await repository.get_notification(deps.pool, notification_id)
        if existing is not None and existing["status"] == "held" and deps.renderer.reload().loaded:
            # Released by a process that saw the fixed templates before this one did.
            row = await _claim(deps, notification_id, replay=replay)
    if row is None:
        return await _not_claimable(deps, notification_id)

    channel = row["channel"]
    bind_trace_id(row["trace_id"])  # ECS trace.id on every line of this delivery
    bound = bound.bind(channel=channel, attempt=row["attempts"])
    context = repository.context_of(row)
    templates = deps.renderer.current  # one set for the render and for the hold that may follow
    try:
        content = templates.render(row["template"], channel, context)
        user = context.get("user")
        outgoing = Outgoing(
            notification_id=notification_id,
            recipient=row["recipient"],
            recipient_name=str(user.get("name") or "") if isinstance(user, dict) else None,
            trace_id=row["trace_id"],
            content=content,
        )
        provider_message_id = await deps.senders[channel].send(outgoing)
    except TemplateProblem as exc:
        return await _hold(deps, row, exc, templates.fingerprint, bound)
    except PermanentFailure as exc:
        return await _finish_failed(deps, row, exc.detail, bound)
    except TransientFailure as exc:
        async with deps.pool.acquire() as conn:
            await repository.finish_attempt(conn, row, outcome="transient_error", error=exc.detail)
        DELIVERIES.labels(channel, "transient_error").inc()
        bound.warning("notification_send_deferred", error=exc.detail)
        raise

    current = await _record_sent(deps, row, provider_message_id, bound)
    DELIVERIES.labels(channel, "sent").inc()
    if not current:
        # Our lease ran out mid-send and another attempt took the row: both may have sent.
        bound.warning("notification_sent_after_lease_expired")
    bound.info("notification_sent", provider_message_id=provider_message_id)
    return "sent"


async def _record_sent(
    deps: DeliveryDeps, row: asyncpg.Record, provider_message_id: str | None, bound: structlog.BoundLogger
) -> bool:
    """Record a send that happened; while PostgreSQL is away keep trying, within the lease.

    The message is out: giving up here would leave the row ``sending`` until its lease ran out,
    and the next attempt would send it a second time (found by the fault suite, issue 12).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deps.lease_s * 0.8
    delay = 0.2
    while True:
        try:
            async with deps.pool.acquire() as conn:
                recorded: bool = await repository.finish_attempt(
                    conn, row, outcome="sent", provider_message_id=provider_message_id
                )
                return recorded
        except Exception as exc:
            if as_dependency_failure(exc) is None or loop.time() + delay > deadline:
                raise
            bound.warning("notification_sent_not_recorded_yet", error=str(exc)[:200], retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _claim(deps: DeliveryDeps, notification_id: str, *, replay: bool) -> asyncpg.Record | None:
    async with deps.pool.acquire() as conn:
        return await repository.claim(
            conn,
            notification_id,
            lease_s=deps.lease_s,
            revive_dead=replay,
            templates_fingerprint=deps.renderer.fingerprint,
        )


async def _hold(
    deps: DeliveryDeps,
    row: asyncpg.Record,
    problem: TemplateProblem,
    fingerprint: str,
    bound: structlog.typing.FilteringBoundLogger,
) -> str:
    error = f"held until the templates are fixed: template error: {problem}"
    async with deps.pool.acquire() as conn:
        await repository.finish_attempt(conn, row, outcome="held", error=error, held_fingerprint=fingerprint)
    DELIVERIES.labels(row["channel"], "held").inc()
    bound.error(
        "notification_held",
        error=error,
        template_file=problem.file,
        template_line=problem.line,
        templates=fingerprint[:12],
    )
    return "held"


async def _finish_failed(
    deps: DeliveryDeps, row: asyncpg.Record, error: str, bound: structlog.typing.FilteringBoundLogger
) -> str:
    async with deps.pool.acquire() as conn:
        await repository.finish_attempt(conn, row, outcome="permanent_error", error=error)
    DELIVERIES.labels(row["channel"], "permanent_error").inc()
    bound.warning("notification_failed", error=error)
    return "failed"


async def _not_claimable(deps: DeliveryDeps, notification_id: str) -> str:
    current = await repository.get_notification(deps.pool, notification_id)
    if current is None:
        # A deliver message for a row that does not exist cannot ever succeed; say so and drop it.
        log.error("notification_missing", notification_id=notification_id)
        return "missing"
    status: str = current["status"]
    if status in ("sent", "failed"):
        log.info("notification_already_done", notification_id=notification_id, status=status)
        return status
    if status == "held":
        # Held with the set this process serves: it waits for a new set (the release enqueues it).
        log.info("notification_still_held", notification_id=notification_id)
        return "held"
    if status == "dead":
        raise NotificationDead(f"notification {notification_id} is dead; replay its message to retry it")
    remaining = await repository.lease_remaining_s(deps.pool, notification_id)
    raise NotificationBusy(notification_id, (remaining or 0.0) + 1.0)


async def mark_dead(pool: asyncpg.Pool, notification_id: str, error: str | None) -> bool:
    """Retries ran out: the row says so, and the message is in the dead-letter queue."""
    changed = await repository.mark_dead(pool, notification_id, error)
    if changed:
        log.error("notification_dead", notification_id=notification_id, error=error)
    return changed


# --- The delivery policy -------------------------------------------------------------------


@dataclass(frozen=True)
class RetryLater:
    """Try the notification again after ``delay_s`` (None: the host's own backoff)."""

    delay_s: float | None
    reason: str
    # Another attempt holds the lease: not a failure of this notification, so when retries run
    # out on it the row is left to the attempt that holds it (never made dead by this message).
    blameless: bool = False


# A dead row outside a replay: its message belongs in the dead-letter queue, retrying is pointless.
PERMANENT: tuple[type[Exception], ...] = (NotificationDead,)


def retry_for(exc: BaseException) -> RetryLater | None:
    """How an attempt that raised ``exc`` is retried; None: not by this policy (a plain failure)."""
    if isinstance(exc, TransientFailure):
        return RetryLater(exc.retry_after_s, exc.detail)
    if isinstance(exc, NotificationBusy):
        return RetryLater(exc.retry_after_s, str(exc), blameless=True)
    return None


async def retries_exhausted(pool: asyncpg.Pool, notification_id: str, error: str) -> None:
    """The host gave up on a deliver message (it is in the dead-letter queue): the row says so."""
    await mark_dead(pool, notification_id, f"retries exhausted: {error}"[:1000])


class Defer(Protocol):
    """Publish a deliver message; ``delay_ms`` None: the host's first backoff."""

    async def __call__(
        self, notification_id: str, *, trace_id: str | None, delay_ms: int | None, retries: int
    ) -> None: ...


async def first_attempt(
    deps: DeliveryDeps,
    notification_id: str,
    trace_id: str | None,
    *,
    defer: Defer,
    claimed: asyncpg.Record | None = None,
) -> str:
    """Deliver a notification the fan-out just created, in the fan-out's own run.

    It is the same attempt a deliver message would make (same claim, same lease), so exactly one
    email per notification holds. Only when the attempt has to wait (a transient failure, a busy
    row, a failure of our own such as the database being away) is a deliver message published:
    from there on, retries, the dead-letter queue and replay work as for any other delivery. A
    failed attempt counts as the message's first try, so the retry budget is the same.
    """
    try:
        return await deliver(deps, notification_id, claimed=claimed)
    except PERMANENT:
        log.info("notification_already_dead", notification_id=notification_id)
        return "dead"
    except Exception as exc:  # every other outcome goes on as a deliver message
        retry = retry_for(exc)
        if retry is None:
            log.warning(
                "first_delivery_attempt_failed",
                notification_id=notification_id,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            retry = RetryLater(None, str(exc))
        delay_ms = None if retry.delay_s is None else int(retry.delay_s * 1000)
        retries = 0 if retry.blameless else 1
        await defer(notification_id, trace_id=trace_id, delay_ms=delay_ms, retries=retries)
        return "deferred"
