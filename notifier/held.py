"""Keeping a rendering process's templates current, and giving held notifications back.

Every process that renders (each worker process, the notification API) runs one
``TemplateWatcher``: it reloads the folder every ``TEMPLATES_RELOAD_INTERVAL_S`` (all-or-nothing,
see ``notifier.templates``) and, whenever the set it serves is a clean one it has not released
for yet, and every ``HELD_SWEEP_INTERVAL_S`` besides, enqueues a deliver message for each held
row that set may deliver.

Releasing is idempotent: the row stays `held` until a worker claims it, and the claim is what
lets one attempt through; the release only stamps the row so that several processes (and
sweeps) do not each send a message for it. A message lost after the stamp is made up for by a
sweep once ``HELD_RELEASE_RETRY_S`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from prometheus_client import Gauge

from notifier import repository
from notifier.templates import TemplateRenderer

log = structlog.get_logger(__name__)
# Enqueue a deliver message for (notification id, trace id).
Enqueue = Callable[[str, str | None], Awaitable[None]]
RELEASE_BATCH = 500


@functools.cache
def held_gauge() -> Gauge:
    # On first use, not at import (see notifier.templates.reload_metrics).
    return Gauge(
        "notifications_held",
        "Notifications waiting for a template set that renders them",
        multiprocess_mode="livemax",
    )


@dataclass
class TemplateWatcher:
    renderer: TemplateRenderer
    pool: asyncpg.Pool
    enqueue: Enqueue
    reload_interval_s: float
    sweep_interval_s: float
    release_retry_s: float
    _released_for: str | None = None
    _last_sweep: float = float("-inf")
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background on the running loop until ``stop``."""
        self._task = asyncio.create_task(self.run(), name="template-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tick(self) -> int:
        """One round: reload, then release if due; the number of rows released."""
        now = time.monotonic()
        sweep = now - self._last_sweep >= self.sweep_interval_s
        self.renderer.reload(reread=sweep)
        fingerprint = self.renderer.fingerprint
        if fingerprint == self._released_for and not sweep:
            return 0
        self._last_sweep = now
        released = await self.release() if self.renderer.ok else 0
        held_gauge().set(await repository.count_held(self.pool))
        self._released_for = fingerprint if self.renderer.ok else self._released_for
        return released

    async def release(self) -> int:
        """Enqueue the held rows the current set may deliver; how many."""
        fingerprint = self.renderer.fingerprint
        released = 0
        while True:
            rows = await repository.release_held(
                self.pool, fingerprint, retry_after_s=self.release_retry_s, limit=RELEASE_BATCH
            )
            for row in rows:
                await self.enqueue(row["id"], row["trace_id"])
            released += len(rows)
            if len(rows) < RELEASE_BATCH:
                break
        if released:
            log.info("held_notifications_released", count=released, templates=fingerprint[:12])
        return released

    async def run(self) -> None:
        """Tick forever; a failing round (database away) is logged and the next one tries again."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any one failure
                log.warning("template_watch_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.reload_interval_s)
