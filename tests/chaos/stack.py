"""What the suite reads of the running stack: processes by port, readiness, backlogs.

Processes are found by the port they listen on (``ss``) or by their command line, and signalled
by that pid only. Backlogs are read directly (PostgreSQL on its own port, RabbitMQ's management
API), not through the fault proxy, so an injected fault never blinds the measurement.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg


def pid_on_port(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:``port``, if any."""
    result = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"pid=(\d+)", result.stdout)
    return int(found.group(1)) if found else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _start_time(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _runs_its_own_worker(pid: int) -> bool:
    # ``--processes 1`` runs the worker in the supervised process itself (workers/inprocess.py).
    return " --processes 1 " in f"{_cmdline(pid)} "


def worker_pids() -> tuple[int | None, list[int]]:
    """(the ``python -m workers`` process the supervisor started, the processes running actors).

    With ``--processes 1`` both are that one process; with more, Dramatiq's main process and its
    worker processes.
    """
    candidates = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and "-m workers" in _cmdline(int(entry)):
            candidates.append(int(entry))
    parents = {pid: _parent(pid) for pid in candidates}
    # A worker process orphaned by a killed main has no parent among them either; the main is
    # the one with worker processes of its own or running its own (the newest, if an old one
    # lingers).
    mains = [
        pid
        for pid in candidates
        if parents[pid] not in candidates and (pid in parents.values() or _runs_its_own_worker(pid))
    ]
    if not mains:
        return None, []
    main = max(mains, key=_start_time)
    if _runs_its_own_worker(main):
        return main, [main]
    children = [pid for pid in candidates if parents[pid] == main]
    return main, children


async def ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def wait_until(probe: object, timeout_s: float, interval_s: float = 0.25) -> float | None:
    """Seconds until the async ``probe()`` is true, or None if it never was within ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await probe():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(interval_s)
    return None


@dataclass
class Backlog:
    """Outbox (unpublished events) and RabbitMQ queue depth, sampled while the suite runs."""

    orders_dsn: str
    management_url: str
    vhost: str = "/"
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, outbox, queued)

    async def outbox(self, conn: asyncpg.Connection) -> int:
        count: int = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        return count

    async def queued(self, session: aiohttp.ClientSession) -> int:
        vhost = "%2F" if self.vhost == "/" else self.vhost
        try:
            async with session.get(
                f"{self.management_url}/api/queues/{vhost}", timeout=aiohttp.ClientTimeout(total=3)
            ) as response:
                queues = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return -1
        return sum(int(q.get("messages", 0)) for q in queues if not str(q.get("name", "")).endswith(".XQ"))

    async def dead_letters(self, session: aiohttp.ClientSession, queue: str) -> int:
        vhost = "%2F" if self.vhost == "/" else self.vhost
        try:
            async with session.get(
                f"{self.management_url}/api/queues/{vhost}/{queue}", timeout=aiohttp.ClientTimeout(total=3)
            ) as response:
                if response.status == 404:
                    return 0
                return int((await response.json()).get("messages", 0))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return -1

    async def sample_forever(self, session: aiohttp.ClientSession, interval_s: float = 0.5) -> None:
        # Reconnects: the PostgreSQL crash fault takes this connection down too.
        conn: asyncpg.Connection | None = None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.orders_dsn, timeout=3)
                outbox = await self.outbox(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None
                outbox = -1
            queued = await self.queued(session)
            self.samples.append((time.monotonic(), outbox, queued))
            await asyncio.sleep(interval_s)

    def peak(self, start: float, end: float) -> tuple[int, int]:
        window = [(o, q) for at, o, q in self.samples if start <= at <= end]
        return (max((o for o, _ in window), default=0), max((q for _, q in window), default=0))

    def drained_after(self, since: float) -> float | None:
        """Seconds after ``since`` until the outbox and the queues were both empty."""
        for at, outbox, queued in self.samples:
            if at >= since and outbox == 0 and queued == 0:
                return at - since
        return None
