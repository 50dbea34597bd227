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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baselines, pgcluster, replay, report
from bench.phases import (
    FULL,
    MAIN_CONNECTIONS,
    QUICK,
    Meter,
    Plan,
    closed_loop,
    measure_idle,
    memory_mb,
    open_loop,
    soak,
    sql_replay,
)
from bench.stack import Stack


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


async def guarded(results: dict[str, Any], name: str, work: Any) -> Any:
    """Run one phase; a failure is recorded with the results instead of losing the whole run."""
    try:
        return await work
    except Exception as exc:  # any phase may fail on a broken stack: say which and go on
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return None


def say(label: str, phase: dict[str, Any], latency: dict[str, float]) -> None:
    print(
        f"{label}: p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
        f"{phase['fully_processed']}/{phase['accepted']} processed, drain {phase['drain_s']} s, "
        f"sustained {phase['sustained']}, {phase['cpu_ms_per_order_total']} ms CPU/order",
        flush=True,
    )


async def closed_loops(stack: Stack, meter: Meter, plan: Plan, results: dict[str, Any]) -> None:
    databases = [
        stack.settings.user_db_name,
        stack.settings.order_db_name,
        stack.settings.notification_db_name,
    ]
    for connections in plan.closed_connections:
        if connections == MAIN_CONNECTIONS:
            await replay.reset_statements(stack.admin_db)
        phase = await guarded(
            results, f"closed_loop_{connections}", closed_loop(stack, meter, plan, connections)
        )
        if phase is None:
            continue
        results["closed_loop"].append(phase)
        if connections == MAIN_CONNECTIONS:
            results["statements"] = await replay.statement_counts(
                stack.admin_db, databases, phase["fully_processed"]
            )
            results["main_run"] = {"label": f"closed loop, {connections} connections", **phase}
        say(f"closed loop c={connections}", phase, phase["wrk"]["latency_ms"])


async def get_order(stack: Stack, plan: Plan) -> dict[str, Any]:
    getter = await stack.new_user("get")
    order_id = await stack.place_order(getter)
    report_, _ = await baselines.wrk(
        f"{stack.gateway_url}/api/orders/{order_id}",
        connections=MAIN_CONNECTIONS,
        seconds=plan.get_s,
        script="get.lua",
        env={"BENCH_TOKEN": getter.token},
    )
    return report_


async def open_loops(stack: Stack, meter: Meter, plan: Plan, results: dict[str, Any]) -> float | None:
    best = None
    for rate in plan.open_rates:
        phase = await guarded(results, f"open_loop_{rate}", open_loop(stack, meter, plan, rate, plan.open_s))
        if phase is None:
            break
        results["open_loop"].append(phase)
        say(f"open loop {rate}/s", phase, phase["client"]["latency_ms"])
        if phase["passes"]:
            best = rate
        elif plan.mode == "full":
            break
    return best


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
        await closed_loops(stack, meter, plan, results)
        results["get_order"] = await guarded(results, "get_order", get_order(stack, plan))
        best = await open_loops(stack, meter, plan, results)
        results["open_loop_max_rate"] = best
        if plan.mode == "full" and best:
            results["at_70_percent"] = await guarded(
                results, "at_70_percent", open_loop(stack, meter, plan, round(best * 0.7), plan.open_s)
            )
        nginx = await guarded(
            results,
            "nginx_return_200",
            baselines.nginx_return_200(
                out / "nginx", connections=MAIN_CONNECTIONS, seconds=plan.baseline_s, workers="auto"
            ),
        )
        bare = await guarded(
            results,
            "bare_aiohttp",
            baselines.bare_aiohttp(connections=MAIN_CONNECTIONS, seconds=plan.baseline_s),
        )
        results["baselines"] = {
            name: {"connections": MAIN_CONNECTIONS, **found}
            for name, found in (("nginx_return_200", nginx), ("bare_aiohttp", bare))
            if found
        }
        if postmaster is not None:
            found = await guarded(results, "sql_replay", sql_replay(stack, meter, plan, out))
            if found:
                results["baselines"]["sql_replay"] = found
        results["ratios"] = ratios(results)
        if plan.soak_s and best:
            results["memory"]["soak"] = await guarded(
                results, "soak", soak(stack, meter, plan, round(best * 0.5), postmaster)
            )
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
    out = (args.out or Path("var/bench") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")).resolve()
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
