"""The /proc accounting the benchmark's per-order CPU figures rest on."""

from __future__ import annotations

import os

from bench import procs


def proc(
    pid: int, cmdline: str, *, ppid: int = 1, comm: str = "python3", ticks: int = 0, reaped: int = 0
) -> procs.Proc:
    return procs.Proc(pid, ppid, 0, comm, cmdline, ticks, reaped, 4096)


def test_components_are_named_by_command_line_and_database() -> None:
    classifier = procs.Classifier(
        postmaster=100, database_of={101: "orders"}, load_generators=frozenset({900})
    )
    cases = {
        proc(1, "/v/bin/python -m user_api serve --port 8081"): "user_api",
        proc(2, "/v/bin/python -m order_api serve --port 8082"): "order_api",
        proc(3, "/v/bin/python -m notifier serve --port 8083"): "notifier",
        proc(4, "/v/bin/python -m notifier.smtp_sink --port 1025"): "smtp_sink",
        proc(5, "/v/bin/python -m dramatiq workers --processes 2"): "workers",
        proc(6, "nginx: worker process", comm="nginx"): "nginx",
        proc(7, "redis-server 127.0.0.1:6379", comm="redis-server"): "redis",
        proc(8, "/usr/lib/erlang/erts/bin/beam.smp -- -s rabbit boot", comm="beam.smp"): "rabbitmq",
        proc(
            101, "postgres: postgres orders 127.0.0.1(5000) idle", ppid=100, comm="postgres"
        ): "postgresql:orders",
        proc(102, "postgres: walwriter", ppid=100, comm="postgres"): "postgresql:server",
        proc(50, "postgres: 15/main: checkpointer", ppid=49, comm="postgres"): None,  # another server
        proc(901, "wrk -t2 -c16", ppid=900, comm="wrk"): "load_generator",
    }
    snapshot = {p.pid: p for p in cases}
    for process, expected in cases.items():
        assert classifier.component(process, snapshot) == expected, process.cmdline


def test_cpu_counts_differences_births_and_reaped_backends() -> None:
    classifier = procs.Classifier(postmaster=100, database_of={101: "orders"})
    before = {
        100: proc(100, "postgres -D /x", comm="postgres", ticks=10, reaped=5),
        101: proc(101, "postgres: orders", ppid=100, comm="postgres", ticks=200),
        7: proc(7, "redis-server", comm="redis-server", ticks=1000),
    }
    after = {
        100: proc(100, "postgres -D /x", comm="postgres", ticks=10, reaped=5 + 3 * procs.CLOCK_TICKS),
        101: proc(101, "postgres: orders", ppid=100, comm="postgres", ticks=200 + procs.CLOCK_TICKS),
        7: proc(7, "redis-server", comm="redis-server", ticks=1000 + procs.CLOCK_TICKS // 2),
        8: proc(8, "/v/bin/python -m user_api serve", ticks=2 * procs.CLOCK_TICKS),  # born in between
    }
    spent = procs.cpu_by_component(before, after, classifier)
    assert spent["postgresql:orders"] == 1.0
    assert spent["postgresql:ended_backends"] == 3.0
    assert spent["redis"] == 0.5
    assert spent["user_api"] == 2.0
    assert procs.subtract_idle(spent, {"redis": 0.125, "user_api": 1.0}, 2.0) == {
        **spent,
        "redis": 0.25,
        "user_api": 0.0,
    }
    assert procs.system_total({"redis": 1.0, "smtp_sink": 5.0, "load_generator": 9.0}) == 1.0


def test_snapshot_reads_this_process() -> None:
    me = procs.snapshot()[os.getpid()]
    assert me.cpu_ticks >= 0
    assert me.rss_bytes > 0
    assert procs.pss_bytes(os.getpid()) > 0
