"""Baseline for the database work: the system's own SQL, replayed by a bare client.

``pg_stat_statements`` deltas over a run say which statements an order costs and how often
(``statement_counts``). For the replay, the cluster logs every statement with its parameters
for a short capture window; each captured session's statements, parameters inlined, are then
run by ``psql`` (libpq, one process per original session, all at once) against copies of the
databases taken just before the window. The same statements, in the same sessions, from a
client that costs nearly nothing: what PostgreSQL needs for the work, against what the system
spends for it. (pgbench would stop a session at its first error; a replayed UPDATE that meets
a row another session has not inserted yet is harmless, so psql, which carries on, is used.)
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import resource
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import pgcluster, procs

LOG_LINE = re.compile(r"^duration: [\d.]+ ms  (?:statement|execute [^:]+): (.*)$", re.DOTALL)
PARAMETER = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')", re.DOTALL)
PLACEHOLDER = re.compile(r"\$(\d+)\b")
# The values in an error message (keys, ids), so that messages of one kind count together.
ERROR_VALUES = re.compile(r"\([^)]*\)=\([^)]*\)|'[^']*'")
CSV_DATABASE, CSV_SESSION, CSV_MESSAGE, CSV_DETAIL, CSV_APPLICATION = 2, 5, 13, 14, 22

STATS_SQL = """
    SELECT d.datname AS database, s.query, s.calls, s.total_exec_time, s.rows
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    WHERE d.datname = ANY($1::text[])
"""


async def reset_statements(admin: asyncpg.Connection) -> None:
    await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await admin.execute("SELECT pg_stat_statements_reset()")


async def statement_counts(admin: asyncpg.Connection, databases: list[str], orders: int) -> dict[str, Any]:
    """Statements per order by database since the last reset, with the most frequent ones."""
    rows = await admin.fetch(STATS_SQL, databases)
    per_database: dict[str, float] = defaultdict(float)
    top = []
    for row in rows:
        if row["query"].lstrip().upper().startswith(("SELECT PG_STAT_STATEMENTS", "CREATE EXTENSION")):
            continue
        per_database[row["database"]] += row["calls"]
        top.append(
            (row["calls"], row["database"], " ".join(row["query"].split())[:160], row["total_exec_time"])
        )
    top.sort(reverse=True)
    divisor = max(orders, 1)
    return {
        "orders": orders,
        "per_order_by_database": {
            name: round(calls / divisor, 2) for name, calls in sorted(per_database.items())
        },
        "per_order_total": round(sum(per_database.values()) / divisor, 2),
        "top": [
            {
                "database": db,
                "calls_per_order": round(calls / divisor, 3),
                "exec_ms_per_call": round(ms / calls, 4),
                "query": q,
            }
            for calls, db, q, ms in top[:15]
        ],
    }


def _pg_tool(name: str) -> str:
    return str(pgcluster.bin_dir() / name)


def _libpq_env(settings: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "PGHOST": settings.db_host,
        "PGPORT": str(settings.db_port),
        "PGUSER": settings.db_username,
    }
    if settings.db_password:
        env["PGPASSWORD"] = settings.db_password
    return env


def clone_databases(settings: Any, databases: list[str]) -> dict[str, str]:
    """``replay_<db>``: a copy of each database as it is now (pg_dump | pg_restore)."""
    env = _libpq_env(settings)
    clones = {}
    for database in databases:
        clone = f"replay_{database}"
        subprocess.run([_pg_tool("dropdb"), "--if-exists", "--force", clone], check=True, env=env)
        subprocess.run([_pg_tool("createdb"), clone], check=True, env=env)
        dump = subprocess.run(
            [_pg_tool("pg_dump"), "-Fc", database], check=True, env=env, capture_output=True
        )
        subprocess.run(
            [_pg_tool("pg_restore"), "--no-owner", "-d", clone], input=dump.stdout, check=True, env=env
        )
        clones[database] = clone
    return clones


def drop_clones(settings: Any, clones: dict[str, str]) -> None:
    env = _libpq_env(settings)
    for clone in clones.values():
        subprocess.run([_pg_tool("dropdb"), "--if-exists", "--force", clone], check=False, env=env)


async def set_statement_logging(admin: asyncpg.Connection, on: bool) -> None:
    if on:
        await admin.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
    else:
        await admin.execute("ALTER SYSTEM RESET log_min_duration_statement")
    await admin.execute("SELECT pg_reload_conf()")


def inline(statement: str, detail: str) -> str:
    values = {int(n): literal for n, literal in PARAMETER.findall(detail or "")}
    return PLACEHOLDER.sub(lambda m: values.get(int(m.group(1)), m.group(0)), statement)


def sessions_from_log(text: str, databases: set[str]) -> dict[str, tuple[str, list[str]]]:
    """session id -> (database, statements with their parameters inlined), in log order."""
    sessions: dict[str, tuple[str, list[str]]] = {}
    for row in csv.reader(io.StringIO(text)):
        if (
            len(row) <= CSV_APPLICATION
            or row[CSV_DATABASE] not in databases
            or row[CSV_APPLICATION] == "bench"
        ):
            continue
        match = LOG_LINE.match(row[CSV_MESSAGE])
        if not match:
            continue
        statement = inline(match.group(1), row[CSV_DETAIL]).strip().rstrip(";")
        sessions.setdefault(row[CSV_SESSION], (row[CSV_DATABASE], []))[1].append(statement)
    return sessions


@dataclass
class ReplayResult:
    sessions: int
    statements: int
    errors: int
    # The most frequent error messages, with their counts: what the replay could not redo.
    error_kinds: dict[str, int]
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float


async def replay(
    settings: Any, sessions: dict[str, tuple[str, list[str]]], clones: dict[str, str], work: Path
) -> ReplayResult:
    work.mkdir(parents=True, exist_ok=True)
    env = _libpq_env(settings)
    postmaster = pgcluster.postmaster_pid(pgcluster.DEFAULT_DIR)
    scripts = []
    for index, (database, statements) in enumerate(sessions.values()):
        path = work / f"session-{index:03d}.sql"
        path.write_text("".join(f"{statement};\n" for statement in statements))
        scripts.append((clones[database], path))
    server_before = procs.read_proc(postmaster) if postmaster else None
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    runs = [
        await asyncio.create_subprocess_exec(
            _pg_tool("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=0",
            "-d",
            clone,
            "-f",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        for clone, path in scripts
    ]
    outputs = await asyncio.gather(*(run.communicate() for run in runs))
    wall = time.perf_counter() - start
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = procs.read_proc(postmaster) if postmaster else None
    server_cpu = 0.0
    if server_before and server_after:
        server_cpu = (server_after.child_ticks - server_before.child_ticks) / procs.CLOCK_TICKS
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    kinds = Counter(
        ERROR_VALUES.sub("…", line.split("ERROR:", 1)[1].strip())[:120]
        for _, err in outputs
        for line in err.decode(errors="replace").splitlines()
        if "ERROR:" in line
    )
    return ReplayResult(
        sessions=len(scripts),
        statements=sum(len(statements) for _, statements in sessions.values()),
        errors=sum(kinds.values()),
        error_kinds=dict(kinds.most_common(5)),
        wall_s=round(wall, 3),
        client_cpu_s=round(client_cpu, 3),
        server_cpu_s=round(server_cpu, 3),
    )
