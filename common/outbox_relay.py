"""The outbox relay: publishes the events that ``common.outbox.add_event`` wrote, then marks them.

Any service whose database has the outbox table runs it as a cleanup context
(``common.outbox_relay_ctx``; this module imports no aiohttp). It is safe with several instances
against one database:

- A batch is claimed with ``SELECT … FOR UPDATE SKIP LOCKED``, so two relays never hold the same
  event, and the row lock is held until the broker has confirmed the message.
- Only the oldest unpublished event of each aggregate is eligible. A later event of an order
  therefore waits until the earlier one is published, whichever relay holds it, so consumers see
  an order's events in order. (Producers lock the aggregate row when they write an event, so an
  aggregate's event ids grow in commit order.)
- Delivery is at least once: if the process dies between the broker's confirm and the commit
  of ``published_at``, the event is published again with the same Dramatiq message id.

It wakes on ``LISTEN outbox_events`` and also polls, so a lost notification (or a listener
connection that is down) delays an event by at most one poll interval. With RabbitMQ down it
backs off and retries; events wait in the table, and producers are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from common.amqp import AmqpUnavailable, DramatiqPublisher, PublishRejected
from common.events import ROUTES, event_message
from common.outbox import OUTBOX_CHANNEL
from common.tracing import producer_span

log = structlog.get_logger(__name__)

OUTBOX_BACKLOG = Gauge("outbox_backlog_events", "Outbox events not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_event_age_seconds", "Age of the oldest unpublished outbox event", ["service"]
)
OUTBOX_PUBLISHED = Counter(
    "outbox_events_published_total", "Outbox events published and confirmed", ["service", "event_type"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "outbox_publish_failures_total", "Outbox events whose publication failed (retried later)", ["service"]
)
OUTBOX_BROKER_CONNECTED = Gauge(
    "outbox_relay_broker_connected", "1 when the relay holds a RabbitMQ connection", ["service"]
)

METRICS_INTERVAL_S = 1.0

# The batch is chosen among the oldest pending events ($2 of them, locked or not): the first of
# each aggregate there is the first of that aggregate anywhere, as any earlier one would be older.
# Up to $1 of those heads are locked (SKIP LOCKED: a head another relay holds keeps its
# successors back, and that relay takes the next heads). The window is wider than a batch, so an
# aggregate with many events in a row does not leave a batch with one head.
# The work cannot depend on how many events the statistics think are pending (ANALYZE often runs
# when none are, and an anti-join over the pending events then went quadratic: half a second a
# batch at a backlog of 2,000, issue 11). The window reads the pending events at most once (in id
# order, or all of them and sorted, as the planner likes), the heads are fetched by primary key:
# the last step has no condition on published_at, which would make the partial indexes
# candidates, so a head published meanwhile by another relay comes back with its published_at and
# is left out by the caller. outbox_events_aggregate_pending_idx is no longer read by this
# release; the previous one's claim needs it, so it goes in a later contract migration
# (docs/deployment.md, "Migrations stay compatible with the previous release").
# A head its producer holds (``held_until``, ``common.outbox``) is left out until its
# hold is over, and keeps its aggregate's successors back like any other head.
# ``more``: the window was full, or an aggregate had a successor in it (eligible once this batch
# commits); with a full batch, another pass is due as well.
CLAIM_WINDOW_FACTOR = 10
CLAIM_BATCH_SQL = """
    WITH oldest AS MATERIALIZED (
        SELECT id, aggregate_id FROM outbox_events
        WHERE published_at IS NULL
        ORDER BY id
        LIMIT $2
    )
    SELECT e.id, e.event_type, e.payload::text AS payload, e.published_at,
           (SELECT count(*) > count(DISTINCT aggregate_id) OR count(*) = $2 FROM oldest) AS more
    FROM outbox_events e
    WHERE e.id = ANY (ARRAY(
        SELECT DISTINCT ON (aggregate_id) id FROM oldest ORDER BY aggregate_id, id
    ))
      AND (e.held_until IS NULL OR e.held_until <= now())
    ORDER BY e.id
    LIMIT $1
    FOR UPDATE OF e SKIP LOCKED
"""
MARK_PUBLISHED_SQL = """
    UPDATE outbox_events SET published_at = now(), attempts = attempts + 1, last_error = NULL
    WHERE id = ANY($1::bigint[])
"""
RECORD_FAILURE_SQL = "UPDATE outbox_events SET attempts = attempts + 1, last_error = $2 WHERE id = $1"
BACKLOG_SQL = """
    SELECT count(*) AS backlog,
           COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
    FROM outbox_events WHERE published_at IS NULL
"""


class Backoff:
    """Exponential backoff with jitter, so several relays do not reconnect in lockstep."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._max_s, self._initial_s * 2**self._failures)
        self._failures = min(self._failures + 1, 30)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self._failures = 0


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: DramatiqPublisher,
        *,
        service: str,
        listen_dsn: str | None = None,
        batch_size: int = 100,
        poll_interval_s: float = 2.0,
        max_backoff_s: float = 30.0,
        linger_s: float = 0.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._service = service
        self._listen_dsn = listen_dsn
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._linger_s = linger_s
        self._backoff = Backoff(max_s=max_backoff_s)
        self._wakeup = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._metrics_at = float("-inf")

    async def publish_pending(self) -> int:
        """Publish every eligible event now; the number published. Raises AmqpUnavailable.

        Once ``stop`` was called, returns after the batch in hand (the rest waits in the table).
        """
        await self._ensure_broker()
        total = 0
        while True:
            published, more, broker_error = await self._publish_batch()
            total += published
            if broker_error is not None:
                raise broker_error
            # Under load a pass finds an event or two: an empty pass after each would cost as
            # many round trips again (issue 11). Events committed meanwhile NOTIFY a new pass.
            if not more or published == 0 or self._stopping.is_set():
                return total

    async def _ensure_broker(self) -> None:
        if not self._publisher.is_connected:
            OUTBOX_BROKER_CONNECTED.labels(self._service).set(0)
        await self._publisher.ensure_ready()
        OUTBOX_BROKER_CONNECTED.labels(self._service).set(1)

    async def _publish_event(self, payload: str) -> str:
        event = json.loads(payload)
        for route in ROUTES.get(event["event_type"], ()):
            # A producer span in the event's trace; the message's options carry its context.
            with producer_span(route.queue_name, route.actor_name, parent=event):
                await self._publisher.send(event_message(event, route))
        return str(event["event_type"])

    async def _publish_batch(self) -> tuple[int, bool, AmqpUnavailable | None]:
        """Claim, publish and mark one batch.

        Returns (published, whether more may be eligible now, broker error if any).
        """
        broker_error: AmqpUnavailable | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(
                CLAIM_BATCH_SQL, self._batch_size, self._batch_size * CLAIM_WINDOW_FACTOR
            )
            rows = [row for row in claimed if row["published_at"] is None]
            if not rows:
                return 0, False, None
            # One event per aggregate in a batch, so publishing them concurrently keeps the order.
            results = await asyncio.gather(
                *(self._publish_event(row["payload"]) for row in rows), return_exceptions=True
            )
            published_ids: list[int] = []
            failures: list[tuple[int, str]] = []
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, str):
                    published_ids.append(row["id"])
                    OUTBOX_PUBLISHED.labels(self._service, result).inc()
                    continue
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result  # cancellation: roll back, nothing is marked
                # A PublishRejected is retried with the next pass (the publisher declares again).
                if isinstance(result, AmqpUnavailable):
                    broker_error = result
                elif not isinstance(result, PublishRejected):
                    log.error("outbox_event_unpublishable", outbox_id=row["id"], error=repr(result))
                failures.append((row["id"], str(result)[:1000]))
            if published_ids:
                await conn.execute(MARK_PUBLISHED_SQL, published_ids)
            if failures:
                await conn.executemany(RECORD_FAILURE_SQL, failures)
                OUTBOX_PUBLISH_FAILURES.labels(self._service).inc(len(failures))
                log.warning("outbox_publish_failed", failed=len(failures), first_error=failures[0][1])
        more = len(claimed) == self._batch_size or bool(claimed[0]["more"])
        return len(published_ids), more, broker_error

    async def refresh_metrics(self) -> None:
        try:
            row = await self._pool.fetchrow(BACKLOG_SQL)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return  # the next loop tries again; a stale gauge beats a dead relay
        if row is not None:
            OUTBOX_BACKLOG.labels(self._service).set(row["backlog"])
            OUTBOX_OLDEST_AGE.labels(self._service).set(row["oldest_age_s"])

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _ensure_listener(self) -> None:
        if self._listen_dsn is None or (self._listener is not None and not self._listener.is_closed()):
            return
        try:
            listener = await asyncpg.connect(self._listen_dsn, timeout=5)
            await listener.add_listener(OUTBOX_CHANNEL, self._on_notify)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("outbox_listen_failed", error=str(exc), fallback="polling")
            return
        self._listener = listener
        # Events committed while we were not listening: look at once.
        self._wakeup.set()

    async def _wait_for_work(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=timeout_s)
            if self._linger_s > 0 and not self._stopping.is_set():
                await asyncio.sleep(self._linger_s)  # woken by a NOTIFY: let the next ones come

    async def run(self) -> None:
        log.info("outbox_relay_started", batch_size=self._batch_size, poll_interval_s=self._poll_interval_s)
        while not self._stopping.is_set():
            await self._ensure_listener()
            # Cleared before the pass: a NOTIFY that arrives during it triggers another pass.
            self._wakeup.clear()
            try:
                published = await self.publish_pending()
            except AmqpUnavailable as exc:
                OUTBOX_BROKER_CONNECTED.labels(self._service).set(0)
                await self._after_failure("outbox_relay_broker_unavailable", exc)
                continue
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                await self._after_failure("outbox_relay_database_unavailable", exc)
                continue
            except Exception as exc:  # a relay that dies silently loses every later event
                log.exception("outbox_relay_unexpected_error")
                await self._after_failure("outbox_relay_unexpected_error", exc)
                continue
            self._backoff.reset()
            if published:
                log.info("outbox_events_published", count=published)
            # The backlog gauges at most once a second: under load a pass comes with each order,
            # and so does an empty one of the relay that lost the race for the batch. Idle, a
            # pass comes every poll interval and refreshes them.
            now = asyncio.get_running_loop().time()
            if now - self._metrics_at >= METRICS_INTERVAL_S:
                self._metrics_at = now
                await self.refresh_metrics()
            await self._wait_for_work(self._poll_interval_s)

    async def _after_failure(self, event: str, exc: Exception) -> None:
        delay = self._backoff.next_delay()
        log.warning(event, error=str(exc)[:300], retry_in_s=round(delay, 2))
        await self.refresh_metrics()
        # Not woken by NOTIFY: new events cannot go out before the broker is back either.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"outbox-relay-{self._service}")

    async def stop(self, *, grace_s: float = 15.0) -> None:
        """Let the batch in hand finish (publish, confirm, mark), then stop; cancel after ``grace_s``.

        A cancelled batch rolls back: its events are published again by the next relay (at least
        once, same message ids), so even a cut-short stop loses nothing.
        """
        self._stopping.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
            except TimeoutError:
                log.warning("outbox_relay_stop_timeout", grace_s=grace_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except asyncio.CancelledError:
                task.cancel()
                raise
        log.info("outbox_relay_stopped")
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(asyncpg.InterfaceError, OSError, TimeoutError):
                await listener.close(timeout=2)
        await self._publisher.close()
        OUTBOX_BROKER_CONNECTED.labels(self._service).set(0)
