"""Open-loop load: Poisson arrivals at a fixed rate, latency measured from the intended send time.

A closed-loop client (wrk) waits for each answer before it sends the next request, so a slow
server also slows the load and hides its own queueing ("coordinated omission"). Here every
request has a time it was due; when the client or the server falls behind, the wait counts in
the latency. Runs as its own process (``python -m bench.openloop``) so its CPU is the load
generator's, and prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from hdrh.histogram import HdrHistogram

MAX_IN_FLIGHT = 2000  # beyond this the server is hopelessly behind: count, don't pile up


async def run(
    url: str,
    *,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    rate: float,
    duration_s: float,
    seed: int,
) -> dict[str, Any]:
    histogram = HdrHistogram(1, 120_000_000, 3)  # microseconds, up to two minutes
    statuses: Counter[str] = Counter()
    in_flight = 0
    rng = random.Random(seed)  # noqa: S311 - arrival times, not secrets
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            async with session.request(method, url, headers=headers, data=body) as response:
                await response.read()
                statuses[str(response.status)] += 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            statuses[f"error:{type(exc).__name__}"] += 1
        finally:
            in_flight -= 1
            histogram.record_value(max(1, int((time.perf_counter() - due) * 1_000_000)))

    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        due = start
        sent = 0
        while True:
            due += rng.expovariate(rate)
            if due - start > duration_s:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                statuses["error:client_overflow"] += 1
                continue
            task = asyncio.create_task(one(session, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(tasks)
        elapsed = time.perf_counter() - start
    return {
        "offered_rate": rate,
        "duration_s": round(elapsed, 3),
        "sent": sent,
        "achieved_rate": round(sent / elapsed, 2) if elapsed else 0.0,
        "statuses": dict(statuses),
        "latency_ms": {
            name: histogram.get_value_at_percentile(pct) / 1000
            for name, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9), ("max", 100))
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop")
    parser.add_argument("url")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--body", default=None)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    body = args.body.encode() if args.body is not None else None
    result = asyncio.run(
        run(
            args.url,
            method=args.method,
            headers=headers,
            body=body,
            rate=args.rate,
            duration_s=args.duration,
            seed=args.seed,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
