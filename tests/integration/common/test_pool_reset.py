"""The pool's reset sends nothing; these pin why that is safe (common.db.keep_session)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from common.db import create_pool
from common.migrations import migrate_dsn
from tests.conftest import pg_dsn

ROOT = Path(__file__).resolve().parents[3]
PRODUCTION = ["common", "order_api", "user_api", "notifier", "workers"]

# Session state that would outlive a release, and the only places allowed to create it, each on
# a connection of its own (asyncpg.connect), never on a pooled one.
SESSION_STATE = {
    "LISTEN": (re.compile(r"add_listener\(|[\"']\s*LISTEN\b", re.I), {"common/outbox_relay.py"}),
    "session advisory lock": (
        re.compile(r"pg_advisory_lock\(|pg_try_advisory_lock\("),
        {"common/migrations.py"},
    ),
    "SET without LOCAL": (re.compile(r"[\"']\s*SET\s+(SESSION\s+)?(?!LOCAL\b)\w+\s*(=|TO\b)", re.I), set()),
    "set_config(…, false)": (re.compile(r"set_config\([^)]*false", re.I), set()),
    "cursor outside a transaction": (re.compile(r"\.cursor\(|DECLARE\s+\w+\s+.*WITH\s+HOLD", re.I), set()),
}


def test_the_audit_patterns_catch_what_they_name() -> None:
    samples = {
        "LISTEN": 'await conn.execute("LISTEN outbox_events")',
        "session advisory lock": "SELECT pg_advisory_lock($1)",
        "SET without LOCAL": 'await conn.execute("SET statement_timeout = 50")',
        "set_config(…, false)": "SELECT set_config('search_path', 'x', false)",
        "cursor outside a transaction": "conn.cursor(query)",
    }
    for name, sample in samples.items():
        assert SESSION_STATE[name][0].search(sample), name
    assert not SESSION_STATE["SET without LOCAL"][0].search('"SET LOCAL statement_timeout = 50"')
    assert not SESSION_STATE["SET without LOCAL"][0].search('"UPDATE t SET a = 1"')


def test_only_dedicated_connections_create_session_state() -> None:
    found: dict[str, set[str]] = {name: set() for name in SESSION_STATE}
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for name, (pattern, _) in SESSION_STATE.items():
                if pattern.search(text):
                    found[name].add(str(path.relative_to(ROOT)))
    assert found == {name: allowed for name, (_, allowed) in SESSION_STATE.items()}


def test_the_allowed_places_use_their_own_connection() -> None:
    relay = (ROOT / "common/outbox_relay.py").read_text()
    assert "listener = await asyncpg.connect(" in relay
    migrations = (ROOT / "common/migrations.py").read_text()
    assert re.search(
        r"async def migrate_dsn\(.*?\n    conn = await asyncpg\.connect\(dsn\)", migrations, re.S
    )


async def test_the_migration_lock_is_held_on_a_connection_that_is_closed_after(
    tmp_path: Path, database_factory: Callable[[str], str]
) -> None:
    dsn = pg_dsn(database_factory("reset"))
    (tmp_path / "0001_who.sql").write_text("CREATE TABLE who AS SELECT pg_backend_pid() AS pid;")
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pooled_pid = await conn.fetchval("SELECT pg_backend_pid()")
        await migrate_dsn(dsn, [("t", tmp_path)])
        migration_pid = await pool.fetchval("SELECT pid FROM who")
        assert migration_pid != pooled_pid
        # The migration's connection is gone, so its session lock went with it.
        assert await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", migration_pid) == 0
        assert await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    finally:
        await pool.close()


async def test_release_sends_nothing_but_still_ends_an_open_transaction(
    database_factory: Callable[[str], str],
) -> None:
    pool = await create_pool(pg_dsn(database_factory("reset")), min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE t (x int)")
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            # Kept on purpose: the reset does not clear session state, hence the audit above.
            await conn.execute("SELECT set_config('application_name', 'kept', false)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO t VALUES (1)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert await conn.fetchval("SELECT current_setting('application_name')") == "kept"
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM t") == 0
    finally:
        await pool.close()
