"""Releases: ``deploy.sh staging|production VERSION`` records what it deployed and ``deploy.sh
rollback ENV`` runs the release before it again, without building (a ``docker`` on PATH records
its calls: there is no Docker engine here). And the migrations rule that makes a rollback safe:
migrations only expand the schema, and a committed migration is never edited."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.config.conftest import ROOT

FAKE_DOCKER = """#!/bin/sh
printf '%s|%s\\n' "$IMAGE_TAG" "$*" >> "$FAKE_DOCKER_LOG"
case " $* " in *" up "*) [ "$IMAGE_TAG" = "$FAKE_DOCKER_FAIL_TAG" ] && exit 1 ;; esac
exit 0
"""


class Deployer:
    def __init__(self, tmp_path: Path) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").write_text(FAKE_DOCKER)
        (bin_dir / "docker").chmod(0o755)
        self.calls_log = tmp_path / "docker.calls"
        self.home = tmp_path / "home"
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(self.home),
            "FAKE_DOCKER_LOG": str(self.calls_log),
            "FAKE_DOCKER_FAIL_TAG": "",
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "scripts/deploy.sh"), *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[tuple[str, str]]:
        """(IMAGE_TAG, arguments) of each docker call since the last time this was asked."""
        if not self.calls_log.exists():
            return []
        text = self.calls_log.read_text()
        self.calls_log.unlink()
        return [tuple(line.split("|", 1)) for line in text.splitlines()]  # type: ignore[misc]

    def history(self, env_name: str) -> list[list[str]]:
        path = self.home / ".local/state/microservices-app/releases" / f"{env_name}.tsv"
        return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture
def deployer(tmp_path: Path) -> Deployer:
    return Deployer(tmp_path)


def deployed(deployer: Deployer, env_name: str, *versions: str) -> None:
    for version in versions:
        result = deployer.run(env_name, version)
        assert result.returncode == 0, result.stderr
    deployer.calls()


def test_a_deployment_builds_runs_and_records_the_version(deployer: Deployer) -> None:
    result = deployer.run("production", "v1.0.0")
    assert result.returncode == 0, result.stderr
    files = "-f docker-compose.yml -f docker-compose.prod.yml"
    assert deployer.calls() == [
        ("v1.0.0", f"compose {files} build"),
        ("v1.0.0", f"compose {files} up -d --remove-orphans --wait"),
        ("v1.0.0", f"compose {files} ps"),
    ]
    [entry] = deployer.history("production")
    assert entry[1:4] == ["deploy", "v1.0.0", "ok"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry[0])
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert entry[4] == revision.strip()


def test_rollback_runs_the_previous_release_without_building(deployer: Deployer) -> None:
    deployed(deployer, "staging", "v1", "v2")
    result = deployer.run("rollback", "staging")
    assert result.returncode == 0, result.stderr
    calls = deployer.calls()
    assert {tag for tag, _ in calls} == {"v1"}
    assert not any(" build" in args for _, args in calls)
    files = "-f docker-compose.yml -f docker-compose.staging.yml"
    assert ("v1", f"compose {files} up -d --no-build --pull missing --remove-orphans --wait") in calls
    assert [entry[1:4] for entry in deployer.history("staging")][-1] == ["rollback", "v1", "ok"]
    assert "in service: v1" in deployer.run("releases", "staging").stdout


def test_rollbacks_walk_back_one_release_each_until_the_first(deployer: Deployer) -> None:
    deployed(deployer, "production", "v1", "v2", "v2", "v3")  # v2 twice is one release
    for expected in ("v2", "v1"):
        assert deployer.run("rollback", "production").returncode == 0
        assert {tag for tag, _ in deployer.calls()} == {expected}
    refused = deployer.run("rollback", "production")
    assert refused.returncode != 0
    assert "no earlier production release" in refused.stderr
    assert deployer.calls() == []
    # A new deployment after rollbacks is the new current release; rollback returns to v1.
    deployed(deployer, "production", "v4")
    assert deployer.run("rollback", "production").returncode == 0
    assert {tag for tag, _ in deployer.calls()} == {"v1"}


def test_a_failed_deployment_is_recorded_and_rollback_restores_the_current_release(
    deployer: Deployer,
) -> None:
    deployed(deployer, "production", "v1")
    failed = deployer.run("production", "v2", FAKE_DOCKER_FAIL_TAG="v2")
    assert failed.returncode != 0
    assert "rollback production' returns to v1" in failed.stderr
    assert deployer.history("production")[-1][1:4] == ["deploy", "v2", "failed"]
    deployer.calls()
    restored = deployer.run("rollback", "production")
    assert restored.returncode == 0, restored.stderr
    assert {tag for tag, _ in deployer.calls()} == {"v1"}
    assert deployer.history("production")[-1][1:4] == ["restore", "v1", "ok"]
    # v1 is still the only release: nothing earlier to go back to.
    assert deployer.run("rollback", "production").returncode != 0


def test_environments_keep_separate_histories(deployer: Deployer) -> None:
    deployed(deployer, "staging", "v1", "v2")
    deployed(deployer, "production", "v1")
    assert deployer.run("rollback", "production").returncode != 0
    assert deployer.run("rollback", "staging").returncode == 0


@pytest.mark.parametrize(
    "args", [("production",), ("production", "a/b"), ("rollback",), ("rollback", "local")]
)
def test_bad_arguments_are_refused_before_docker_runs(deployer: Deployer, args: tuple[str, ...]) -> None:
    result = deployer.run(*args)
    assert result.returncode != 0
    assert deployer.calls() == []


def test_releases_dir_can_be_moved(deployer: Deployer, tmp_path: Path) -> None:
    result = deployer.run("staging", "v9", RELEASES_DIR=str(tmp_path / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere/staging.tsv").read_text().split("\t")[2] == "v9"


# --- migrations stay compatible with the previous release ---------------------------------------

MIGRATIONS = sorted(
    p for p in ROOT.glob("*/sql/**/*.sql") if ".venv" not in p.parts and "build" not in p.parts
)
# Statements the previous release's code may not survive (it still reads or writes what they
# remove or change). They belong in a later "contract" migration, marked as such, once no
# release in service uses the old shape (docs/deployment.md, "Releases and rollback").
DESTRUCTIVE = {
    "drops a table": r"\bDROP\s+TABLE\b",
    "drops a column": r"\bDROP\s+COLUMN\b",
    "renames": r"\bRENAME\b",
    "changes a column's type": r"\bALTER\s+COLUMN\s+\w+\s+(SET\s+DATA\s+)?TYPE\b",
    "makes a column required": r"\bSET\s+NOT\s+NULL\b",
    "drops a type or view the code may use": r"\bDROP\s+(TYPE|VIEW|FUNCTION)\b",
}
CONTRACT_MARK = re.compile(r"^--\s*contract:\s*\S", re.MULTILINE)


def without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def test_there_are_migrations_to_check() -> None:
    assert len(MIGRATIONS) >= 4


@pytest.mark.parametrize("path", MIGRATIONS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_migrations_only_expand_the_schema(path: Path) -> None:
    sql = path.read_text()
    if CONTRACT_MARK.search(sql):
        return  # a reviewed contract step: its comment names the release that stopped using it
    code = without_comments(sql).upper()
    found = [what for what, pattern in DESTRUCTIVE.items() if re.search(pattern, code)]
    # ADD COLUMN … NOT NULL needs a DEFAULT, or the previous release's INSERTs fail.
    for match in re.finditer(r"\bADD\s+COLUMN\b[^,;]*", code):
        if "NOT NULL" in match.group(0) and "DEFAULT" not in match.group(0):
            found.append("adds a required column without a default")
    assert not found, f"{path.name} {', '.join(found)}: split it into expand now, contract later"


@pytest.mark.parametrize("path", MIGRATIONS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_committed_migration_is_never_edited(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", relative],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        return  # new in this change, not committed yet
    first = subprocess.run(
        ["git", "show", f"{added[-1]}:{relative}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    # The runner refuses a changed checksum on databases that applied it; a new number is the way.
    assert path.read_text() == first, f"{relative} differs from the version first committed"


def test_the_destructive_patterns_catch_what_they_name() -> None:
    samples = {
        "drops a table": "DROP TABLE orders;",
        "drops a column": "ALTER TABLE orders DROP COLUMN total;",
        "renames": "ALTER TABLE orders RENAME COLUMN total TO amount;",
        "changes a column's type": "ALTER TABLE orders ALTER COLUMN total TYPE bigint;",
        "makes a column required": "ALTER TABLE orders ALTER COLUMN note SET NOT NULL;",
        "drops a type or view the code may use": "DROP TYPE order_status;",
    }
    for what, sql in samples.items():
        assert re.search(DESTRUCTIVE[what], sql.upper()), what
    assert not any(
        re.search(p, "ALTER TABLE orders ADD COLUMN note text;".upper()) for p in DESTRUCTIVE.values()
    )


# The same rule, checked on PostgreSQL: each migration applied to the schema before it keeps every
# column the previous release reads and writes, and lets its INSERTs (which do not name the new
# columns) succeed.

COLUMNS_SQL = """
SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'YES' AS nullable,
       (c.column_default IS NOT NULL OR c.is_identity = 'YES' OR c.is_generated = 'ALWAYS') AS has_default
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.table_name <> 'schema_migrations'
"""


def service_migrations() -> dict[str, list[tuple[str, Path]]]:
    from notifier.app import MIGRATIONS as NOTIFIER
    from order_api.app import MIGRATIONS as ORDERS
    from user_api.app import MIGRATIONS as USERS

    return {"user_api": list(USERS), "order_api": list(ORDERS), "notifier": list(NOTIFIER)}


async def columns(conn: Any) -> dict[tuple[str, str], Any]:
    return {(row["table_name"], row["column_name"]): row for row in await conn.fetch(COLUMNS_SQL)}


async def check_expand_only(conn: Any, components: list[tuple[str, Path]], scratch: Path) -> None:
    from common.migrations import migrate

    steps = [(component, path) for component, folder in components for path in sorted(folder.glob("*.sql"))]
    assert steps
    before: dict[tuple[str, str], Any] = {}
    for component, migration in steps:
        # The release that added this migration: the folders as they were, up to this file.
        (scratch / component).mkdir(parents=True, exist_ok=True)
        shutil.copy(migration, scratch / component / migration.name)
        await migrate(conn, [(name, scratch / name) for name, _ in components])
        after = await columns(conn)
        label = f"{component}/{migration.name}"
        for key, old in before.items():
            assert key in after, f"{label} removes {key}, which the release before it uses"
            assert after[key]["data_type"] == old["data_type"], f"{label} changes the type of {key}"
            assert after[key]["nullable"] or not old["nullable"], f"{label} makes {key} required"
        old_tables = {table for table, _ in before}
        for (table, column), new in after.items():
            if table in old_tables and (table, column) not in before:
                assert new["nullable"] or new["has_default"], (
                    f"{label} adds {table}.{column} NOT NULL without a default: old INSERTs fail"
                )
        before = after


@pytest.fixture
async def scratch_db(database_factory: Callable[[str], str]) -> Any:
    import asyncpg

    from tests.conftest import pg_dsn

    conn = await asyncpg.connect(pg_dsn(database_factory("compat")))
    yield conn
    await conn.close()


@pytest.mark.parametrize("service", ["user_api", "order_api", "notifier"])
async def test_each_migration_keeps_what_the_release_before_it_uses(
    service: str, scratch_db: Any, tmp_path: Path
) -> None:
    await check_expand_only(scratch_db, service_migrations()[service], tmp_path)


@pytest.mark.parametrize(
    ("second", "complaint"),
    [
        ("ALTER TABLE t DROP COLUMN b;", "removes"),
        ("ALTER TABLE t ALTER COLUMN a TYPE bigint;", "changes the type"),
        ("ALTER TABLE t ALTER COLUMN b SET NOT NULL;", "makes"),
        ("ALTER TABLE t ADD COLUMN c text NOT NULL;", "without a default"),
    ],
)
async def test_the_check_catches_a_migration_that_breaks_the_previous_release(
    second: str, complaint: str, scratch_db: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "0001_t.sql").write_text("CREATE TABLE t (a integer, b text);")
    (folder / "0002_change.sql").write_text(second)
    with pytest.raises(AssertionError, match=complaint):
        await check_expand_only(scratch_db, [("demo", folder)], tmp_path / "scratch")
