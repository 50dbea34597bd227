"""``python -m bench [--quick] [--out DIR]``: the whole benchmark against a running stack.

Normally started by ``./scripts/bench.sh``, which puts the stack on the benchmark's own
PostgreSQL cluster (for ``pg_stat_statements``) and lifts the gateway's rate limit for the run.
Writes ``results.json``, ``results.md`` and the plots into the output folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baselines, pgcluster, procs, replay, report
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
FULL = Plan("full", 15, (8, 16, 32), 30, 15, tuple(range(50, 1001, 50)), 30, 10, 10, 600, 180)
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


def machine() -> dict[str, Any]:
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    cores = os.cpu_count() or 0
    return {
        "cores": cores,
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "summary": f"{cores} cores, {round(memory_kb / 2**20)} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
    }


async def run(plan: Plan, gateway_url: str, out: Path) -> dict[str, Any]:
    postmaster = pgcluster.postmaster_pid(pgcluster.DEFAULT_DIR)
    stack = await Stack.open(gateway_url)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.mode,
        "machine": machine(),
        "closed_loop": [],
        "open_loop": [],
    }
    try:
        rss, pss = memory_mb(postmaster)
        results["memory"] = {"python_idle_rss_mb": rss, "python_idle_pss_mb": pss}
        idle_rate = await measure_idle(stack, postmaster, plan.idle_s)
        results["idle_cpu_ms_per_s"] = {name: round(v * 1000, 2) for name, v in idle_rate.items()}
        meter = Meter(stack, postmaster, idle_rate)
        databases = [
            stack.settings.user_db_name,
            stack.settings.order_db_name,
            stack.settings.notification_db_name,
        ]
        for connections in plan.closed_connections:
            if connections == MAIN_CONNECTIONS:
                await replay.reset_statements(stack.admin_db)
            phase = await closed_loop(stack, meter, plan, connections)
            results["closed_loop"].append(phase)
            if connections == MAIN_CONNECTIONS:
                results["statements"] = await replay.statement_counts(
                    stack.admin_db, databases, phase["fully_processed"]
                )
                results["main_run"] = {"label": f"closed loop, {connections} connections", **phase}
            print(
                f"closed loop c={connections}: {phase['wrk']['requests_per_s']} req/s, "
                f"{phase['cpu_ms_per_order_total']} ms CPU/order",
                flush=True,
            )
        getter = await stack.new_user("get")
        order_id = await stack.place_order(getter)
        results["get_order"], _ = await baselines.wrk(
            f"{stack.gateway_url}/api/orders/{order_id}",
            connections=MAIN_CONNECTIONS,
            seconds=plan.get_s,
            script="get.lua",
            env={"BENCH_TOKEN": getter.token},
        )
        best = None
        for rate in plan.open_rates:
            phase = await open_loop(stack, meter, plan, rate, plan.open_s)
            results["open_loop"].append(phase)
            print(
                f"open loop {rate}/s: p99 {phase['client']['latency_ms']['p99']} ms, "
                f"errors {phase['errors']}, sustained {phase['sustained']}",
                flush=True,
            )
            if phase["passes"]:
                best = rate
            elif plan.mode == "full":
                break
        results["open_loop_max_rate"] = best
        if plan.mode == "full" and best:
            results["at_70_percent"] = await open_loop(stack, meter, plan, round(best * 0.7), plan.open_s)
        results["baselines"] = {
            "nginx_return_200": {
                "connections": MAIN_CONNECTIONS,
                **await baselines.nginx_return_200(
                    out / "nginx", connections=MAIN_CONNECTIONS, seconds=plan.baseline_s, workers="auto"
                ),
            },
            "bare_aiohttp": {
                "connections": MAIN_CONNECTIONS,
                **await baselines.bare_aiohttp(connections=MAIN_CONNECTIONS, seconds=plan.baseline_s),
            },
        }
        if postmaster is not None:
            results["baselines"]["sql_replay"] = await sql_replay(stack, meter, plan, out)
        results["ratios"] = ratios(results)
        if plan.soak_s and best:
            results["memory"]["soak"] = await soak(stack, meter, plan, round(best * 0.5), postmaster)
    finally:
        await stack.close()
    return results


def ratios(results: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    main, base = results.get("main_run"), results.get("baselines", {})
    if main and base.get("nginx_return_200"):
        found["gateway POST /api/orders req/s vs nginx return 200"] = round(
            main["wrk"]["requests_per_s"] / base["nginx_return_200"]["requests_per_s"], 4
        )
    if results.get("get_order") and base.get("bare_aiohttp"):
        found["GET /api/orders/{id} req/s vs bare aiohttp"] = round(
            results["get_order"]["requests_per_s"] / base["bare_aiohttp"]["requests_per_s"], 3
        )
    replayed = base.get("sql_replay")
    if main and replayed and replayed["cpu_ms_per_order"]:
        pg = sum(v for k, v in main["cpu_ms_per_order"].items() if k.startswith("postgresql"))
        found["box CPU per order vs SQL replay CPU per order"] = round(
            main["cpu_ms_per_order_total"] / replayed["cpu_ms_per_order"], 2
        )
        found["PostgreSQL CPU per order vs replay's PostgreSQL CPU"] = round(
            pg / max(replayed["server_cpu_ms_per_order"], 0.001), 2
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under two minutes)")
    parser.add_argument("--gateway", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out = args.out or Path("var/bench") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(plan, args.gateway, out))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report.table(results)
    (out / "results.md").write_text(text)
    for path in report.plots(results, out):
        print(f"plot: {path}")
    print(text)
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
