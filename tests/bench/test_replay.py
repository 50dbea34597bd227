"""Turning PostgreSQL's CSV statement log into replayable sessions, and replaying them."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from bench import replay
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, pg_dsn


def log_row(database: str, session: str, message: str, detail: str = "", application: str = "") -> list[str]:
    row = [""] * 26
    row[replay.CSV_DATABASE], row[replay.CSV_SESSION] = database, session
    row[replay.CSV_MESSAGE], row[replay.CSV_DETAIL], row[replay.CSV_APPLICATION] = (
        message,
        detail,
        application,
    )
    return row


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_parameters_are_inlined_as_the_log_quotes_them() -> None:
    statement = "UPDATE t SET a = $1, b = $2 WHERE id = $10 AND c = $1"
    detail = "parameters: $1 = 'it''s', $2 = NULL, $10 = '42'"
    assert (
        replay.inline(statement, detail)
        == "UPDATE t SET a = 'it''s', b = NULL WHERE id = '42' AND c = 'it''s'"
    )


def test_sessions_keep_order_and_skip_other_databases_phases_and_the_bench_itself() -> None:
    text = csv_text(
        [
            log_row("orders", "s1", "duration: 0.010 ms  statement: BEGIN;"),
            log_row("orders", "s1", "duration: 0.020 ms  parse <unnamed>: INSERT INTO t VALUES ($1)"),
            log_row(
                "orders",
                "s1",
                "duration: 0.030 ms  execute __asyncpg_stmt_1__: INSERT INTO t VALUES ($1)",
                "parameters: $1 = 'x'",
            ),
            log_row("orders", "s1", "duration: 0.010 ms  statement: COMMIT;"),
            log_row("postgres", "s2", "duration: 0.010 ms  statement: SELECT 1"),
            log_row("orders", "s3", "duration: 0.010 ms  statement: SELECT 2", application="bench"),
            log_row("orders", "s4", "connection authorized: user=postgres"),
        ]
    )
    sessions = replay.sessions_from_log(text, {"orders"})
    assert sessions == {"s1": ("orders", ["BEGIN", "INSERT INTO t VALUES ('x')", "COMMIT"])}


@pytest.fixture
def source_database(database_factory: Callable[[str], str]) -> str:
    return database_factory("bench")


class Settings:
    db_host, db_port, db_username, db_password = PG_HOST, PG_PORT, PG_USER, PG_PASSWORD


async def test_replay_runs_each_session_against_a_copy_taken_before(
    source_database: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn(source_database))
    try:
        await conn.execute("CREATE TABLE t (id uuid PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO t VALUES ($1, 'before')", uuid.uuid4())
    finally:
        await conn.close()
    clones = replay.clone_databases(Settings, [source_database])
    try:
        new_ids = [str(uuid.uuid4()) for _ in range(3)]
        insert = "INSERT INTO t VALUES ('{}', 'replayed')"
        sessions = {
            f"s{i}": (source_database, ["BEGIN", insert.format(new_id), "COMMIT"])
            for i, new_id in enumerate(new_ids)
        }
        sessions["bad"] = (source_database, ["SELECT no_such_column FROM t", "SELECT 1"])
        result = await replay.replay(Settings, sessions, clones, tmp_path)
        assert (result.sessions, result.statements, result.errors) == (4, 11, 1)
        assert result.error_kinds == {'column "no_such_column" does not exist': 1}
        copy = await asyncpg.connect(pg_dsn(clones[source_database]))
        try:
            notes = sorted(await copy.fetchval("SELECT array_agg(note) FROM t"))
        finally:
            await copy.close()
        assert notes == ["before", "replayed", "replayed", "replayed"]
    finally:
        replay.drop_clones(Settings, clones)
