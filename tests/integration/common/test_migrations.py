from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from common.migrations import MigrationError, discover, migrate
from tests.conftest import pg_dsn


def _write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(sql)


async def test_applies_in_order_once_and_records_checksums(
    tmp_path: Path, database_factory: Callable[[str], str]
) -> None:
    db = database_factory("mig")
    _write(tmp_path / "a", "0001_first.sql", "CREATE TABLE t (x int);")
    _write(tmp_path / "a", "0002_second.sql", "INSERT INTO t VALUES (1);")
    conn = await asyncpg.connect(pg_dsn(db))
    try:
        assert await migrate(conn, [("a", tmp_path / "a")]) == ["a/0001_first", "a/0002_second"]
        assert await migrate(conn, [("a", tmp_path / "a")]) == []
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE component = 'a'") == 2
    finally:
        await conn.close()


async def test_refuses_an_applied_migration_that_was_edited(
    tmp_path: Path, database_factory: Callable[[str], str]
) -> None:
    db = database_factory("mig")
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (x int);")
    conn = await asyncpg.connect(pg_dsn(db))
    try:
        await migrate(conn, [("a", tmp_path)])
        _write(tmp_path, "0001_first.sql", "CREATE TABLE t (x bigint);")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate(conn, [("a", tmp_path)])
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
    tmp_path: Path, database_factory: Callable[[str], str]
) -> None:
    db = database_factory("mig")
    _write(tmp_path, "0001_bad.sql", "CREATE TABLE half (x int); SELECT * FROM no_such_table;")
    conn = await asyncpg.connect(pg_dsn(db))
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, [("a", tmp_path)])
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(
    tmp_path: Path, database_factory: Callable[[str], str]
) -> None:
    db = database_factory("mig")
    # Not idempotent on purpose: a second application would fail on the duplicate table.
    _write(tmp_path, "0001_t.sql", "CREATE TABLE t (x int); SELECT pg_sleep(0.2);")
    conns = [await asyncpg.connect(pg_dsn(db)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, [("a", tmp_path)]) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 1]
    finally:
        for c in conns:
            await c.close()


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "1_first.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        discover(tmp_path)
