"""The faults, one at a time: what each injects, for how long, and how it is undone.

Process faults signal one process found by its port (or Dramatiq's worker processes) and let the
supervisor bring it back; network faults switch a route of the suite's own proxy. Nothing here
stops or signals the machine's PostgreSQL, Redis or RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
from pamqp.commands import Basic

from tests.chaos import stack
from tests.chaos.load import REJECTED_MARK
from tests.chaos.pg_cluster import OwnPostgres
from tests.chaos.rabbit_node import OwnRabbit

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Context:
    session: aiohttp.ClientSession
    proxy_url: str
    amqp_url: str  # the shared broker, directly (the poison message)
    ports: dict[str, int]  # process name -> port it listens on
    smtp_control_url: str = ""
    notes: list[str] = field(default_factory=list)

    async def smtp(self, mode: str, reject_pattern: str = "") -> None:
        async with self.session.put(
            f"{self.smtp_control_url}/mode", json={"mode": mode, "reject_pattern": reject_pattern}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"smtp front: {response.status} {await response.text()}")

    async def route(self, name: str, mode: str, **params: float) -> None:
        async with self.session.put(
            f"{self.proxy_url}/routes/{name}", json={"mode": mode, **params}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"proxy route {name}: {response.status} {await response.text()}")

    async def routes(self, names: list[str], mode: str, **params: float) -> None:
        await asyncio.gather(*(self.route(name, mode, **params) for name in names))


Action = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Action
    heal: Action | None = None
    duration_s: float = 0.0
    quick: bool = False
    # For process faults: the process that must come back (name in Context.ports, or "workers").
    returns: str | None = None
    # Orders of accounts whose address contains this lose their emails by design in this fault.
    mail_exempt: str | None = None
    # How long the backlog may take to drain after the fault (0: the runner's default).
    drain_timeout_s: float = 0.0
    # New orders a second from the fault until its backlog has drained (None: the run's rate).
    rate_per_s: float | None = None


def _signal_port(name: str, sig: signal.Signals) -> Action:
    async def act(ctx: Context) -> None:
        pid = stack.pid_on_port(ctx.ports[name])
        if pid is None:
            raise RuntimeError(f"nothing listens on {name}'s port {ctx.ports[name]}")
        os.kill(pid, sig)
        ctx.notes.append(f"{sig.name} to {name} (pid {pid})")

    return act


async def _kill_worker_process(ctx: Context) -> None:
    main, children = stack.worker_pids()
    if not children:
        raise RuntimeError("no Dramatiq worker process found")
    os.kill(children[0], signal.SIGKILL)
    ctx.notes.append(f"SIGKILL to worker process {children[0]} (main {main})")


def _signal_worker_pool(sig: signal.Signals) -> Action:
    async def act(ctx: Context) -> None:
        main, _ = stack.worker_pids()
        if main is None:
            raise RuntimeError("no Dramatiq main process found")
        os.kill(main, sig)
        ctx.notes.append(f"{sig.name} to the worker pool (main pid {main})")

    return act


def _routes(names: list[str], mode: str, **params: float) -> Action:
    async def act(ctx: Context) -> None:
        await ctx.routes(names, mode, **params)

    return act


def _reset_then_ok(names: list[str]) -> Action:
    # Bytes were swallowed mid-stream: the live connections are garbage; reset them, then forward.
    async def act(ctx: Context) -> None:
        await ctx.routes(names, "reset")
        await asyncio.sleep(0.2)
        await ctx.routes(names, "ok")

    return act


def _smtp(mode: str, reject_pattern: str = "") -> Action:
    async def act(ctx: Context) -> None:
        await ctx.smtp(mode, reject_pattern)

    return act


async def _poison(ctx: Context) -> None:
    """A message no actor can handle, on the orders queue: it must dead-letter, not block."""
    connection = await aiormq.connect(ctx.amqp_url)
    try:
        channel = await connection.channel()
        bad_event = {
            "queue_name": "orders",
            "actor_name": "orders.process",
            "args": [{"event_type": "order.created", "data": {"order": {"id": "not-a-uuid"}}}],
            "kwargs": {},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": 0,
        }
        for body in (b"\xffnot json at all", json.dumps(bad_event).encode()):
            await channel.basic_publish(
                body, exchange="", routing_key="orders", properties=Basic.Properties(delivery_mode=2)
            )
    finally:
        await connection.close()
    ctx.notes.append("published 2 poison messages (undecodable, contract-breaking) to 'orders'")


async def _reload_gateway(ctx: Context) -> None:
    for _ in range(3):
        await asyncio.to_thread(
            subprocess.run,
            [str(ROOT / "scripts/gateway.sh"), "reload"],
            check=True,
            capture_output=True,
        )
        await asyncio.sleep(1)
    ctx.notes.append("gateway.sh reload x3, 1 s apart")


PG, AMQP, REDIS = ["pg"], ["amqp"], ["redis"]
USERS = ["user_api_1", "user_api_2"]
LATENCY_MS = (
    2000.0  # above every client timeout: Redis 1 s, user validation 1 s, pool acquire 5 s per round trip
)


def _own_rabbit(action: str) -> Action:
    async def act(ctx: Context) -> None:
        node = OwnRabbit.from_env()
        if action == "crash":
            ctx.notes.append(f"SIGKILL to the suite's RabbitMQ node (pid {node.crash()})")
        elif action == "start":
            await asyncio.to_thread(node.start)
            ctx.notes.append("the suite's RabbitMQ node started again")
        else:
            await asyncio.to_thread(node.memory_alarm, action == "alarm-on")

    return act


def _crash_then_restart(ctx: Context) -> Awaitable[None]:
    return _own_rabbit("start")(ctx)


def _own_postgres(action: str) -> Action:
    async def act(ctx: Context) -> None:
        cluster = OwnPostgres.from_env()
        if action == "crash":
            ctx.notes.append(
                f"SIGKILL to the suite's PostgreSQL (postmaster {await asyncio.to_thread(cluster.crash)})"
            )
        else:
            await asyncio.to_thread(cluster.start)
            ctx.notes.append("the suite's PostgreSQL started again (crash recovery)")

    return act


def own_postgres_faults() -> list[Fault]:
    return [
        Fault(
            "PostgreSQL crash (kill -9), restarted",
            "SIGKILL of every process of the suite's cluster, started again after 3 s",
            _own_postgres("crash"),
            _own_postgres("start"),
            3,
        ),
    ]


def own_rabbit_faults() -> list[Fault]:
    """Faults that need the suite's own RabbitMQ node (scripts/chaos.sh starts one)."""
    return [
        Fault(
            "RabbitMQ memory alarm 20 s",
            "vm_memory_high_watermark 10 MB on the suite's node: publishers blocked",
            _own_rabbit("alarm-on"),
            _own_rabbit("alarm-off"),
            20,
        ),
        Fault(
            "RabbitMQ crash (kill -9), restarted",
            "SIGKILL of the suite's node, started again after 3 s",
            _own_rabbit("crash"),
            _crash_then_restart,
            3,
        ),
    ]


def all_faults() -> list[Fault]:
    heal = _routes
    faults = [
        Fault(
            "kill -9 order_api_1",
            "SIGKILL of one order_api instance",
            _signal_port("order_api_1", signal.SIGKILL),
            quick=True,
            returns="order_api_1",
        ),
        Fault(
            "SIGTERM order_api_2",
            "graceful stop of the other order_api instance",
            _signal_port("order_api_2", signal.SIGTERM),
            returns="order_api_2",
        ),
        Fault(
            "kill -9 user_api_1",
            "SIGKILL of one user_api instance",
            _signal_port("user_api_1", signal.SIGKILL),
            returns="user_api_1",
        ),
        Fault(
            "SIGTERM user_api_2",
            "graceful stop of the other user_api instance",
            _signal_port("user_api_2", signal.SIGTERM),
            returns="user_api_2",
        ),
        Fault(
            "kill -9 a worker process",
            "SIGKILL of one Dramatiq worker process",
            _kill_worker_process,
            returns="workers",
        ),
        Fault(
            "SIGTERM worker pool",
            "graceful stop of the whole worker pool",
            _signal_worker_pool(signal.SIGTERM),
            returns="workers",
        ),
        Fault(
            "kill -9 worker pool",
            "SIGKILL of Dramatiq's main process",
            _signal_worker_pool(signal.SIGKILL),
            returns="workers",
        ),
        Fault(
            "PostgreSQL refused 8 s",
            "port closed, live connections reset",
            _routes(PG, "down"),
            heal(PG, "ok"),
            8,
            quick=True,
        ),
        Fault(
            "PostgreSQL reset 8 s",
            "every connection accepted and reset",
            _routes(PG, "reset"),
            heal(PG, "ok"),
            8,
        ),
        Fault(
            "PostgreSQL slow 8 s",
            f"{LATENCY_MS:g} ms per chunk",
            _routes(PG, "latency", latency_ms=LATENCY_MS),
            heal(PG, "ok"),
            8,
        ),
        Fault(
            "RabbitMQ refused 8 s",
            "port closed, live connections reset",
            _routes(AMQP, "down"),
            heal(AMQP, "ok"),
            8,
            quick=True,
        ),
        Fault(
            "RabbitMQ reset 8 s",
            "every connection accepted and reset",
            _routes(AMQP, "reset"),
            heal(AMQP, "ok"),
            8,
        ),
        Fault(
            "RabbitMQ black hole 15 s",
            "bytes swallowed, no answer (publish confirms time out)",
            _routes(AMQP, "blackhole"),
            _reset_then_ok(AMQP),
            15,
        ),
        Fault(
            "RabbitMQ slow 8 s",
            f"{LATENCY_MS:g} ms per chunk",
            _routes(AMQP, "latency", latency_ms=LATENCY_MS),
            heal(AMQP, "ok"),
            8,
        ),
        Fault(
            "Redis refused 8 s",
            "port closed, live connections reset",
            _routes(REDIS, "down"),
            heal(REDIS, "ok"),
            8,
        ),
        Fault(
            "Redis slow 8 s",
            f"{LATENCY_MS:g} ms per chunk",
            _routes(REDIS, "latency", latency_ms=LATENCY_MS),
            heal(REDIS, "ok"),
            8,
        ),
        Fault(
            "user_api_1 unreachable 10 s",
            "one instance's path refused (process alive)",
            _routes(["user_api_1"], "down"),
            heal(["user_api_1"], "ok"),
            10,
        ),
        Fault(
            "user_api refused 8 s",
            "both instances' paths refused",
            _routes(USERS, "down"),
            heal(USERS, "ok"),
            8,
        ),
        Fault(
            "user_api reset 8 s", "both instances' paths reset", _routes(USERS, "reset"), heal(USERS, "ok"), 8
        ),
        Fault(
            "user_api slow 8 s",
            f"{LATENCY_MS:g} ms per chunk, both instances",
            _routes(USERS, "latency", latency_ms=LATENCY_MS),
            heal(USERS, "ok"),
            8,
        ),
        Fault(
            "SMTP 451 for 60 s",
            "every message answered 451 4.3.0 (retried later)",
            _smtp("tempfail"),
            _smtp("ok"),
            60,
            # A minute of orders' emails wait in retries (up to WORKER_MAX_BACKOFF_MS, 30 s in
            # the suite) and then go out beside the new ones: minutes, not seconds. The load is
            # slowed meanwhile, or new orders' emails would queue behind the backlog for good on
            # a machine where delivery has little headroom over the run's rate.
            drain_timeout_s=240,
            rate_per_s=2,
        ),
        Fault(
            "SMTP 550 for one recipient 20 s",
            "RCPT of one account's address answered 550 5.1.1",
            _smtp("reject", REJECTED_MARK),
            _smtp("ok"),
            20,
            mail_exempt=REJECTED_MARK,
        ),
        Fault("poison message", "undecodable and contract-breaking messages on the orders queue", _poison),
        Fault("nginx reload under load", "three gateway reloads", _reload_gateway),
    ]
    if os.environ.get("CHAOS_RABBIT_BASE"):
        faults[14:14] = own_rabbit_faults()
    if os.environ.get("CHAOS_PG_BASE"):
        faults[10:10] = own_postgres_faults()
    return faults


def describe(fault: Fault) -> dict[str, Any]:
    return {"name": fault.name, "description": fault.description, "duration_s": fault.duration_s}
