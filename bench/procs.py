"""CPU and memory of the stack's processes, read from ``/proc`` and grouped by component.

Every process on the box is classified by its command line (and, for PostgreSQL backends, by
the database it serves), so a figure per order covers what the order really costs: the APIs,
the workers, nginx, PostgreSQL by database, RabbitMQ, Redis. The load generator and the SMTP
sink stand for the outside world and are reported apart, never in the per-order total.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Outside the system under test: what generates the load and what stands for the world.
EXTERNAL = frozenset({"load_generator", "smtp_sink", "fake_provider"})
PYTHON_COMPONENTS = ("user_api", "order_api", "notifier", "workers")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    user_uid: int
    comm: str
    cmdline: str
    cpu_ticks: int  # utime + stime of the process and all its threads
    child_ticks: int  # cutime + cstime: children it has reaped (postmaster: ended backends)
    rss_bytes: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def read_proc(pid: int) -> Proc | None:
    base = Path("/proc") / str(pid)
    stat = _read(base / "stat")
    raw_cmd = _read(base / "cmdline")
    status = _read(base / "status")
    if stat is None or raw_cmd is None or status is None:
        return None
    # comm is in parentheses and may itself contain spaces or parentheses.
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1)
    return Proc(
        pid=pid,
        ppid=int(fields[1]),
        user_uid=uid,
        comm=comm,
        cmdline=raw_cmd.replace("\0", " ").strip(),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
        rss_bytes=int(fields[21]) * PAGE_BYTES,
    )


def snapshot() -> dict[int, Proc]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := read_proc(int(entry))) is not None:
            procs[proc.pid] = proc
    return procs


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (forked workers) are split, not counted twice."""
    text = _read(Path("/proc") / str(pid) / "smaps_rollup") or ""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Classifier:
    """Names the component of a process. ``postmaster`` is the PostgreSQL server under test."""

    postmaster: int | None
    database_of: Mapping[int, str] = field(default_factory=dict)  # backend pid -> database
    load_generators: frozenset[int] = frozenset()

    def component(self, proc: Proc, procs: Mapping[int, Proc]) -> str | None:
        cmd, comm = proc.cmdline, proc.comm
        if proc.pid in self.load_generators or proc.ppid in self.load_generators or comm == "wrk":
            return "load_generator"
        if self.postmaster is not None and (proc.pid == self.postmaster or proc.ppid == self.postmaster):
            database = self.database_of.get(proc.pid)
            return f"postgresql:{database}" if database else "postgresql:server"
        if comm.startswith("postgres") or cmd.startswith("postgres"):
            return None  # another PostgreSQL server on the box, not the one under test
        if "notifier.smtp_sink" in cmd:
            return "smtp_sink"
        if "notifier.fake_provider" in cmd:
            return "fake_provider"
        for name in ("user_api", "order_api"):
            if f"-m {name}" in cmd:
                return name
        if "-m notifier" in cmd:
            return "notifier"
        if "dramatiq" in cmd or "-m workers" in cmd:
            return "workers"
        if comm == "nginx" or cmd.startswith("nginx"):
            return "nginx"
        if comm == "redis-server":
            return "redis"
        if comm in ("beam.smp", "epmd", "erl_child_setup", "inet_gethost") or "rabbitmq" in cmd:
            return "rabbitmq"
        if comm in ("prometheus",) or comm.startswith("prometheus-") or "alertmanager" in comm:
            return "monitoring"
        if comm == "supervisord" or "supervisord" in cmd:
            return "supervisor"
        return None


def cpu_by_component(
    before: Mapping[int, Proc], after: Mapping[int, Proc], classifier: Classifier
) -> dict[str, float]:
    """CPU seconds spent per component between two snapshots.

    A process present in both counts its difference; one born in between counts all it used.
    Backends that ended in between are found in the postmaster's reaped-children time.
    """
    spent: dict[str, float] = defaultdict(float)
    for pid, proc in after.items():
        component = classifier.component(proc, after)
        if component is None:
            continue
        start = before.get(pid)
        ticks = proc.cpu_ticks - (start.cpu_ticks if start and start.comm == proc.comm else 0)
        spent[component] += max(ticks, 0) / CLOCK_TICKS
    if classifier.postmaster is not None:
        first, last = before.get(classifier.postmaster), after.get(classifier.postmaster)
        if first and last:
            spent["postgresql:ended_backends"] += (last.child_ticks - first.child_ticks) / CLOCK_TICKS
    return dict(spent)


def subtract_idle(
    spent: Mapping[str, float], idle_rate: Mapping[str, float], seconds: float
) -> dict[str, float]:
    return {name: max(value - idle_rate.get(name, 0.0) * seconds, 0.0) for name, value in spent.items()}


def memory_by_component(procs: Mapping[int, Proc], classifier: Classifier) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"rss": 0, "pss": 0, "processes": 0})
    for proc in procs.values():
        component = classifier.component(proc, procs)
        if component is None:
            continue
        entry = totals[component]
        entry["rss"] += proc.rss_bytes
        entry["pss"] += pss_bytes(proc.pid)
        entry["processes"] += 1
    return dict(totals)


def system_total(values: Mapping[str, float], exclude: Iterable[str] = EXTERNAL) -> float:
    skip = set(exclude)
    return sum(value for name, value in values.items() if name not in skip)
