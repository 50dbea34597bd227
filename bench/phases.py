"""The benchmark's phases: each loads the gateway, then waits until every order it placed is
fully processed (201, CONFIRMED, both e-mails accepted by SMTP) and charges the CPU the whole
box spent over load and drain, idle rate subtracted, to those orders."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import baselines, pgcluster, procs, replay
from bench.stack import ORDER_BODY, BenchUser, Stack


@dataclass(frozen=True)
class Plan:
    mode: str
    idle_s: float
    closed_connections: tuple[int, ...]
    closed_s: float
    get_s: float
    open_rates: tuple[float, ...]  # stepped until one fails (full) or all run (quick)
    open_s: float
    baseline_s: float
    capture_s: float
    soak_s: float
    drain_timeout_s: float


QUICK = Plan("quick", 5, (16,), 8, 5, (20, 40), 8, 4, 3, 0, 60)
# The open loop starts at 25/s: on 2026-12-01 the system missed 50/s, which left no maximum
# and so no rate for the memory soak (half the maximum).
FULL = Plan("full", 15, (8, 16, 32), 30, 15, (25, *range(50, 1001, 50)), 30, 10, 10, 600, 180)
MAIN_CONNECTIONS = 16


@dataclass
class Meter:
    """CPU of every component over a window, idle rate subtracted."""

    stack: Stack
    postmaster: int | None
    idle_rate: dict[str, float]
    extra_generators: frozenset[int] = frozenset()

    async def start(self) -> tuple[dict[int, procs.Proc], dict[int, str], float]:
        return procs.snapshot(), await self.stack.backends(), time.monotonic()

    async def stop(
        self, started: tuple[dict[int, procs.Proc], dict[int, str], float], generators: set[int]
    ) -> tuple[dict[str, float], float]:
        before, backends, t0 = started
        after = procs.snapshot()
        seconds = time.monotonic() - t0
        backends = {**backends, **await self.stack.backends()}
        classifier = procs.Classifier(
            self.postmaster, backends, frozenset(generators | self.extra_generators | self.stack.own_backends)
        )
        spent = procs.cpu_by_component(before, after, classifier)
        return procs.subtract_idle(spent, self.idle_rate, seconds), seconds


def per_order(spent: dict[str, float], orders: int) -> dict[str, float]:
    return {
        name: round(value * 1000 / max(orders, 1), 3)
        for name, value in spent.items()
        if name not in procs.EXTERNAL
    }


async def measure_idle(stack: Stack, postmaster: int | None, seconds: float) -> dict[str, float]:
    meter = Meter(stack, postmaster, {})
    started = await meter.start()
    await asyncio.sleep(seconds)
    spent, elapsed = await meter.stop(started, set())
    return {name: value / elapsed for name, value in spent.items()}


async def processed_phase(
    stack: Stack, meter: Meter, user: BenchUser, plan: Plan, load: Any, load_seconds: float
) -> dict[str, Any]:
    """Run ``load`` (returns its report and generator pids), then wait until every order is done."""
    started = await meter.start()
    load_report, generators = await load
    progress, drain_s, peak = await stack.wait_processed(user, timeout_s=plan.drain_timeout_s)
    spent, seconds = await meter.stop(started, generators)
    cost = per_order(spent, progress.fully_processed)
    return {
        "load": load_report,
        "accepted": progress.accepted,
        "fully_processed": progress.fully_processed,
        "failed_notifications": progress.failed,
        "drain_s": round(drain_s, 2),
        "window_s": round(seconds, 2),
        # A rate is only claimed if the backlog drains soon after the load: bounded, not growing.
        "sustained": progress.done and drain_s <= max(5.0, 0.25 * load_seconds),
        "processed_per_s": round(progress.fully_processed / seconds, 1) if seconds else 0.0,
        "backlog_peak_after_load": peak,
        "cpu_ms_per_order": cost,
        "cpu_ms_per_order_total": round(sum(cost.values()), 2),
    }


async def closed_loop(stack: Stack, meter: Meter, plan: Plan, connections: int) -> dict[str, Any]:
    user = await stack.new_user(f"c{connections}")
    env = {"BENCH_TOKEN": user.token, "BENCH_ORDER_BODY": ORDER_BODY}

    async def load() -> tuple[dict[str, Any], set[int]]:
        result, pid = await baselines.wrk(
            f"{stack.gateway_url}/api/orders",
            connections=connections,
            seconds=plan.closed_s,
            script="post_order.lua",
            env=env,
        )
        return result, {pid}

    phase = await processed_phase(stack, meter, user, plan, load(), plan.closed_s)
    phase["connections"] = connections
    phase["wrk"] = phase.pop("load")
    return phase


async def open_loop(stack: Stack, meter: Meter, plan: Plan, rate: float, seconds: float) -> dict[str, Any]:
    user = await stack.new_user(f"r{int(rate)}")

    async def load() -> tuple[dict[str, Any], set[int]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.openloop",
            f"{stack.gateway_url}/api/orders",
            "--rate",
            str(rate),
            "--duration",
            str(seconds),
            "--body",
            ORDER_BODY,
            "--header",
            f"Authorization: Bearer {user.token}",
            "--header",
            "Content-Type: application/json",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        return json.loads(out), {process.pid}

    phase = await processed_phase(stack, meter, user, plan, load(), seconds)
    client = phase.pop("load")
    errors = sum(count for status, count in client["statuses"].items() if status != "201")
    phase.update(rate=rate, client=client, errors=errors)
    phase["passes"] = errors == 0 and client["latency_ms"]["p99"] <= 100 and phase["sustained"]
    return phase


async def sql_replay(stack: Stack, meter: Meter, plan: Plan, out: Path) -> dict[str, Any]:
    settings = stack.settings
    databases = [settings.user_db_name, settings.order_db_name, settings.notification_db_name]
    clones = await asyncio.to_thread(replay.clone_databases, settings, databases)
    log = pgcluster.csv_log(pgcluster.DEFAULT_DIR)
    try:
        user = await stack.new_user("replay")
        offset = log.stat().st_size
        await replay.set_statement_logging(stack.admin_db, True)
        try:
            await baselines.wrk(
                f"{stack.gateway_url}/api/orders",
                connections=MAIN_CONNECTIONS,
                seconds=plan.capture_s,
                script="post_order.lua",
                env={"BENCH_TOKEN": user.token, "BENCH_ORDER_BODY": ORDER_BODY},
            )
            progress, _, _ = await stack.wait_processed(user, timeout_s=plan.drain_timeout_s)
        finally:
            await replay.set_statement_logging(stack.admin_db, False)
        await asyncio.sleep(1)  # the collector writes asynchronously
        with log.open(encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            text = handle.read()
        sessions = replay.sessions_from_log(text, set(databases))
        result = await replay.replay(settings, sessions, clones, out / "replay")
    finally:
        await asyncio.to_thread(replay.drop_clones, settings, clones)
    orders = max(progress.fully_processed, 1)
    return {
        **asdict(result),
        "orders": progress.fully_processed,
        "statements_per_order": round(result.statements / orders, 2),
        "cpu_ms_per_order": round((result.client_cpu_s + result.server_cpu_s) * 1000 / orders, 3),
        "server_cpu_ms_per_order": round(result.server_cpu_s * 1000 / orders, 3),
    }


def memory_mb(postmaster: int | None) -> tuple[float, float]:
    classifier = procs.Classifier(postmaster)
    usage = procs.memory_by_component(procs.snapshot(), classifier)
    python = [usage[name] for name in procs.PYTHON_COMPONENTS if name in usage]
    return (round(sum(u["rss"] for u in python) / 2**20, 1), round(sum(u["pss"] for u in python) / 2**20, 1))


async def soak(stack: Stack, meter: Meter, plan: Plan, rate: float, postmaster: int | None) -> dict[str, Any]:
    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(memory_mb(postmaster)[1])
            await asyncio.sleep(30)

    sampler = asyncio.create_task(sample())
    try:
        phase = await open_loop(stack, meter, plan, rate, plan.soak_s)
    finally:
        sampler.cancel()
    warm = samples[2:] or samples  # the first minute fills caches and pools
    return {
        "seconds": plan.soak_s,
        "rate": rate,
        "samples_mb": samples,
        "first_mb": warm[0],
        "last_mb": warm[-1],
        "max_mb": max(warm),
        "p99_ms": phase["client"]["latency_ms"]["p99"],
        "errors": phase["errors"],
    }
