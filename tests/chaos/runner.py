"""The fault suite: load through the gateway, one fault at a time, recovery, then the invariants.

    python -m tests.chaos.runner [--quick] [--only NAME …] [--report var/chaos/report.md]

Expects the stack of ``scripts/chaos.sh`` (``deploy.sh local`` with PostgreSQL, RabbitMQ, Redis and
the user_api instances behind the suite's fault proxy). For each fault: 3 s of load, the fault
(for its duration, or a signal), recovery (every process ready again, an order accepted after
it), backlog drain; per fault the error responses by status, time to recover, outbox and queue
backlog peak and drain time. After the last fault the load stops, in-flight orders finish their
retries, and the invariants are checked over every order. Then the negative control runs on its
own and must report lost > 0. Exit status 0 only if every invariant held and the control failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.chaos import invariants, stack, unsafe_relay
from tests.chaos.faults import Context, Fault, all_faults
from tests.chaos.load import LoadClient, OrderAttempt

ENV = os.environ.get
GATEWAY_URL = ENV("CHAOS_GATEWAY_URL", "http://127.0.0.1")
PROXY_URL = ENV("CHAOS_PROXY_URL", "http://127.0.0.1:18999")
SMTP_CONTROL_URL = ENV("CHAOS_SMTP_CONTROL_URL", "")
MAILDIR = Path(ENV("CHAOS_MAILDIR", str(Path(__file__).resolve().parents[2] / "var" / "mail")))
MANAGEMENT_URL = ENV("CHAOS_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
DIRECT_AMQP_URL = ENV("CHAOS_DIRECT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NEGATIVE_AMQP_URL = ENV("CHAOS_NEGATIVE_AMQP_URL", "amqp://guest:guest@127.0.0.1:15674/")
ORDERS_DSN = ENV("CHAOS_ORDERS_DSN", "postgresql://postgres@127.0.0.1:5432/orders")
PORTS = {
    "user_api_1": int(ENV("USER_API_PORT", "8081")),
    "user_api_2": int(ENV("USER_API_PORT_2", "8091")),
    "order_api_1": int(ENV("ORDER_API_PORT", "8082")),
    "order_api_2": int(ENV("ORDER_API_PORT_2", "8092")),
    "notifier_1": int(ENV("NOTIFIER_PORT", "8083")),
}
WORKER_PROCESSES = int(ENV("WORKER_PROCESSES", "1"))
WORKERS_METRICS_PORT = int(ENV("WORKERS_METRICS_PORT", "9191"))
LOG_DIR = Path(ENV("LOG_DIR", str(Path(__file__).resolve().parents[2] / "var" / "log")))
PRE_S, RECOVERY_TIMEOUT_S, DRAIN_TIMEOUT_S = 3.0, 60.0, 45.0
# New orders a second, all clients together: below what the workers deliver on a
# shared two-core machine (5-7 orders/s with both emails, 4 queue messages an order, while other
# test runs take most of the CPU), so a backlog a fault leaves can drain; back to back (0) the
# queues grow for the whole run and no drain time can be measured.
DEFAULT_RATE_PER_S = float(ENV("CHAOS_RATE_PER_S", "4"))


@dataclass
class PhaseResult:
    fault: Fault
    start: float
    injected: float
    healed: float
    end: float = 0.0
    back_s: float | None = None
    recovered_s: float | None = None
    drained_s: float | None = None
    outbox_peak: int = 0
    queue_peak: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    verdict: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: int = 0
    gave_up: int = 0


async def all_ready(session: aiohttp.ClientSession) -> bool:
    results = await asyncio.gather(
        *(stack.ready(session, f"http://127.0.0.1:{port}/health/ready") for port in PORTS.values())
    )
    main, children = stack.worker_pids()
    workers_serve = await stack.ready(session, f"http://127.0.0.1:{WORKERS_METRICS_PORT}/")
    return all(results) and main is not None and len(children) >= WORKER_PROCESSES and workers_serve


async def _process_back(session: aiohttp.ClientSession, name: str, old_pid: int | None) -> bool:
    if name == "workers":
        main, children = stack.worker_pids()
        return (
            main is not None
            and len(children) >= WORKER_PROCESSES
            and (old_pid is None or old_pid not in children)
            # A worker running in its own process serves its metrics once it consumes.
            and await stack.ready(session, f"http://127.0.0.1:{WORKERS_METRICS_PORT}/")
        )
    pid = stack.pid_on_port(PORTS[name])
    return (
        pid is not None
        and pid != old_pid
        and await stack.ready(session, f"http://127.0.0.1:{PORTS[name]}/health/ready")
    )


def _pid_of(name: str) -> int | None:
    if name == "workers":
        main, children = stack.worker_pids()
        return children[0] if children else main
    return stack.pid_on_port(PORTS[name])


async def run_phase(fault: Fault, ctx: Context, load: LoadClient, backlog: stack.Backlog) -> PhaseResult:
    start = time.monotonic()
    await asyncio.sleep(PRE_S)
    ctx.notes = []
    old_pid = _pid_of(fault.returns) if fault.returns else None
    injected = time.monotonic()
    result = PhaseResult(fault, start, injected, injected)
    run_rate = load.rate_per_s
    if fault.rate_per_s is not None:
        load.rate_per_s = fault.rate_per_s  # until the backlog has drained (below)
    try:
        await fault.inject(ctx)
        if fault.duration_s:
            await asyncio.sleep(fault.duration_s)
    except Exception as exc:  # report it as a phase that did not run as planned, go on
        result.error = f"inject: {type(exc).__name__}: {exc}"
    finally:
        if fault.heal is not None:
            await fault.heal(ctx)
    result.healed = healed = time.monotonic()
    if fault.returns:
        name = fault.returns
        waited = await stack.wait_until(lambda: _process_back(ctx.session, name, old_pid), RECOVERY_TIMEOUT_S)
        result.back_s = None if waited is None else (time.monotonic() - injected)
    await stack.wait_until(lambda: all_ready(ctx.session), RECOVERY_TIMEOUT_S)

    async def accepted_after() -> bool:
        return any(o.accepted_at is not None and o.started >= healed for o in load.stats.orders)

    if await stack.wait_until(accepted_after, RECOVERY_TIMEOUT_S) is not None:
        first = min(o.accepted_at for o in load.stats.orders if o.accepted_at and o.started >= healed)
        result.recovered_s = max(0.0, first - healed)
    base_outbox, base_queue = backlog.peak(start, injected)

    def at_base(outbox: int, queued: int) -> bool:
        return 0 <= outbox <= max(base_outbox, 5) and 0 <= queued <= max(base_queue, 20)

    async def drained() -> bool:
        if not backlog.samples:
            return False
        at, outbox, queued = backlog.samples[-1]
        return at > healed and at_base(outbox, queued)

    if await stack.wait_until(drained, fault.drain_timeout_s or DRAIN_TIMEOUT_S) is not None:
        # From the fault's end to the first sample of the drained stretch that lasts until now
        # (the waits for the process and for readiness above do not count).
        after = [(at, at_base(o, q)) for at, o, q in backlog.samples if at > healed]
        since = after[-1][0]
        for at, ok in reversed(after):
            if not ok:
                break
            since = at
        result.drained_s = max(0.0, since - healed)
    load.rate_per_s = run_rate
    result.end = time.monotonic()
    if fault.mail_exempt:
        # Mail of orders placed shortly before the fault is sent during it, too.
        for order in load.stats.orders:
            if fault.mail_exempt in order.email and start - 30 <= order.started <= result.end:
                order.mail_exempt = True
    result.outbox_peak, result.queue_peak = backlog.peak(injected, result.end)
    result.notes = list(ctx.notes)
    result.statuses = load.stats.statuses_between(start, result.end)
    return result


def _orders_in(orders: list[OrderAttempt], phase: PhaseResult) -> list[OrderAttempt]:
    return [o for o in orders if phase.start <= o.started < phase.end]


def _errors(statuses: Counter[int]) -> str:
    errors = {status: count for status, count in statuses.items() if status not in (200, 201)}
    return ", ".join(f"{'no answer' if s == 0 else s} x{n}" for s, n in sorted(errors.items())) or "none"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table(phases: list[PhaseResult]) -> str:
    lines = [
        "| fault | accepted | lost | dup orders | dup emails | stuck | HTTP 500 | gave up "
        "| error responses | back (s) | recovered (s) | outbox peak | queue peak | drained (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        v = p.verdict
        name = p.fault.name + (f" (**{p.error}**)" if p.error else "")
        lines.append(
            f"| {name} | {p.accepted} | {v.get('lost', '?')} | {v.get('duplicate_orders', '?')} "
            f"| {v.get('duplicate_emails', '?')} | {v.get('stuck', '?')} "
            f"| {p.statuses.get(500, 0)} | {p.gave_up} "
            f"| {_errors(p.statuses)} | {_seconds(p.back_s)} | {_seconds(p.recovered_s)} "
            f"| {p.outbox_peak} | {p.queue_peak} | {_seconds(p.drained_s)} |"
        )
    return "\n".join(lines)


def _judge_phase(phase: PhaseResult, orders: list[OrderAttempt], verdict: invariants.Verdict) -> None:
    mine = _orders_in(orders, phase)
    keys = {o.key for o in mine}
    ids = {o.order_id for o in mine if o.order_id}
    phase.accepted = sum(1 for o in mine if o.order_id)
    phase.gave_up = sum(1 for o in mine if o.gave_up)
    phase.verdict = {
        "lost": sum(1 for k in verdict.lost if k in keys),
        "duplicate_orders": sum(1 for k in verdict.duplicate_orders if k in keys),
        "duplicate_emails": sum(1 for i in verdict.duplicate_emails if i in ids),
        "stuck": sum(1 for i in verdict.stuck if i in ids),
    }


async def negative_control(ctx: Context, load: LoadClient) -> PhaseResult:
    """The outbox relay with confirms off, its broker path a black hole: lost must be > 0."""
    fault = Fault(
        "negative control", "a relay without publisher confirms; its RabbitMQ path swallows bytes", _noop
    )
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    relay_log = LOG_DIR / "chaos-unsafe-relay.log"
    with relay_log.open("wb") as out:
        relay = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.unsafe_relay", ORDERS_DSN, NEGATIVE_AMQP_URL],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stop = asyncio.Event()
    start = time.monotonic()
    runner = asyncio.create_task(load.run(stop))
    try:
        # Connected to the broker through the healthy route first (its start-up takes seconds
        # on a loaded machine; a relay still in its handshake at the black hole claims nothing).
        async def relay_connected() -> bool:
            return relay.poll() is not None or unsafe_relay.CONNECTED_LINE in relay_log.read_text(
                errors="replace"
            )

        await stack.wait_until(relay_connected, 60)
        if relay.poll() is not None:
            raise RuntimeError(f"the unsafe relay exited ({relay.returncode}); see {relay_log}")
        await asyncio.sleep(1)
        injected = time.monotonic()
        await ctx.route("amqp_negative", "blackhole")
        await asyncio.sleep(15)
        stop.set()
        await runner
    finally:
        relay.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            relay.wait(timeout=10)
        if relay.poll() is None:
            relay.kill()
        await ctx.route("amqp_negative", "reset")
        await ctx.route("amqp_negative", "ok")
    phase = PhaseResult(fault, start, injected, time.monotonic(), end=time.monotonic())
    phase.statuses = load.stats.statuses_between(start, phase.end)
    return phase


async def _noop(ctx: Context) -> None:
    return None


async def main_async(args: argparse.Namespace) -> int:
    faults = [
        f for f in all_faults() if (f.quick or not args.quick) and (not args.only or f.name in args.only)
    ]
    if not SMTP_CONTROL_URL:
        faults = [f for f in faults if not f.name.startswith("SMTP")]
    async with (
        aiohttp.ClientSession() as session,
        LoadClient(GATEWAY_URL, concurrency=args.clients, rate_per_s=args.rate) as load,
    ):
        ctx = Context(session, PROXY_URL, DIRECT_AMQP_URL, PORTS, SMTP_CONTROL_URL)
        mail = invariants.MailIndex(MAILDIR)
        async with session.post(f"{PROXY_URL}/heal") as healed:
            healed.raise_for_status()
        if await stack.wait_until(lambda: all_ready(session), 60) is None:
            print("the stack is not ready; is scripts/chaos.sh running it?", file=sys.stderr)
            return 2
        await load.register(args.clients)
        backlog = stack.Backlog(ORDERS_DSN, MANAGEMENT_URL)
        sampler = asyncio.create_task(backlog.sample_forever(session))
        dead_before = await backlog.dead_letters(session, "orders.XQ")
        stop = asyncio.Event()
        load_task = asyncio.create_task(load.run(stop))
        phases: list[PhaseResult] = []
        started = time.monotonic()
        for fault in faults:
            print(f"--> {fault.name}", flush=True)
            phase = await run_phase(fault, ctx, load, backlog)
            print(
                f"    back {_seconds(phase.back_s)} s, recovered {_seconds(phase.recovered_s)} s, "
                f"drained {_seconds(phase.drained_s)} s (outbox peak {phase.outbox_peak}, "
                f"queue peak {phase.queue_peak}), "
                f"errors {_errors(phase.statuses)}{' ' + phase.error if phase.error else ''}",
                flush=True,
            )
            phases.append(phase)
        stop.set()
        await load_task  # every order in flight finishes its retries (at most the 60 s budget)
        positive_orders = list(load.stats.orders)
        verdict, waited = await invariants.check(
            positive_orders, orders_dsn=ORDERS_DSN, mail=mail, wait_s=180
        )
        for phase in phases:
            _judge_phase(phase, positive_orders, verdict)
        dead_after = await backlog.dead_letters(session, "orders.XQ")
        control: PhaseResult | None = None
        control_verdict: invariants.Verdict | None = None
        if not args.no_control:
            print("--> negative control", flush=True)
            control = await negative_control(ctx, load)
            control_orders = [o for o in load.stats.orders if o.started >= control.start]
            control_verdict, _ = await invariants.check(
                control_orders, orders_dsn=ORDERS_DSN, mail=mail, wait_s=40
            )
            _judge_phase(control, control_orders, control_verdict)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sampler
    total = time.monotonic() - started
    counts = verdict.counts()
    control_start = control.start if control else float("inf")
    statuses = Counter(status for at, status in load.stats.attempts if at < control_start)
    gave_up = sum(1 for o in positive_orders if o.gave_up)
    summary = {
        "orders": len(positive_orders),
        "accepted": sum(1 for o in positive_orders if o.order_id),
        **counts,
        "http_500": statuses.get(500, 0),
        "gave_up": gave_up,
        "unexpected_responses": dict(load.stats.unexpected),
        "dead_letters_added": dead_after - dead_before,
        "invariant_wait_s": round(waited, 1),
        "duration_s": round(total, 1),
        "negative_control_lost": control.verdict.get("lost") if control else None,
    }
    held = all(v == 0 for v in counts.values()) and summary["http_500"] == 0 and gave_up == 0
    control_ok = control is None or (control.verdict.get("lost", 0) > 0)
    rows = phases + ([control] if control else [])
    report = (
        f"Run of {len(phases)} fault(s){' (--quick)' if args.quick else ''}, {args.clients} clients "
        f"({'unpaced' if not args.rate else f'at most {args.rate:g} new orders/s'}), "
        f"{total:.0f} s: {summary['accepted']} orders accepted of {summary['orders']}; "
        f"lost {counts['lost']}, "
        f"duplicate orders {counts['duplicate_orders']}, duplicate emails {counts['duplicate_emails']}, "
        f"stuck {counts['stuck']}, HTTP 500 {summary['http_500']}, gave up {gave_up}; "
        f"dead letters added {summary['dead_letters_added']}; negative control lost "
        f"{summary['negative_control_lost']} (must be > 0).\n\n" + table(rows) + "\n"
    )
    print(report)
    print(json.dumps(summary, indent=2))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report + "\n```json\n" + json.dumps(summary, indent=2) + "\n```\n")
    if not held:
        print("INVARIANTS VIOLATED", file=sys.stderr)
    if not control_ok:
        print("NEGATIVE CONTROL SAW NO LOSS: the suite cannot see a loss", file=sys.stderr)
    return 0 if held and control_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.runner")
    parser.add_argument("--quick", action="store_true", help="the CI subset")
    parser.add_argument("--only", nargs="*", help="fault names to run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE_PER_S, help="new orders a second, all clients (0: unpaced)"
    )
    parser.add_argument("--no-control", action="store_true", help="leave the negative control out")
    parser.add_argument("--report", help="write the table (markdown) here")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
