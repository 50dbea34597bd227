"""The previous release's code runs on the schema this release migrates to: a rollback runs it
there (docs/deployment.md, "Migrations stay compatible with the previous release").

For each service, the previous release is the commit before its newest migration was added (or
this commit, while a new migration is not committed yet). It is exported with `git archive`,
this checkout's migrations of the service are copied over its own, and that release's own tests
of the service's database code run on the real PostgreSQL: its code, queries and INSERTs on our
schema. The negative control renames a column the old code uses and sees the same run fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.conftest import ROOT

pytestmark = pytest.mark.slow

# Each service's tests that drive its database code (created, read, updated through the
# repository and the handlers), as named in the previous release: tests/integration/<service>/
# or, before the suites moved, tests/<service>/.
DATABASE_TESTS = {
    "order_api": ["test_handlers.py"],
    "notifier": ["test_delivery.py", "api/test_read.py", "api/test_send.py"],
    "user_api": ["test_auth.py", "test_users.py"],
}


def migration_folders(service: str) -> list[Path]:
    if service == "order_api":
        from order_api.app import MIGRATIONS
    elif service == "notifier":
        from notifier.app import MIGRATIONS
    else:
        from user_api.app import MIGRATIONS
    return [Path(folder) for _, folder in MIGRATIONS]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def previous_release(service: str) -> str | None:
    """The commit before the service's newest migration; None when that release had no schema
    of its own (the service's first migration is its newest)."""
    folders = [f.relative_to(ROOT).as_posix() for f in migration_folders(service)]
    files = [f"{folder}/{p.name}" for folder in folders for p in sorted((ROOT / folder).glob("*.sql"))]
    if any(not git("log", "--format=%H", "-1", "--", path).strip() for path in files):
        commit = git("rev-parse", "HEAD").strip()  # a migration of this change, not committed yet
    else:
        newest = git("log", "--diff-filter=A", "--format=%H", "-1", "--", *files).strip()
        commit = git("rev-parse", f"{newest}^").strip()
    # The service's own folder must be there: its migrations are what the old code applies.
    old_files = git("ls-tree", "-r", "--name-only", commit, "--", f"{service}/sql").split()
    return commit if any(name.endswith(".sql") for name in old_files) else None


def export_with_our_schema(service: str, commit: str, into: Path) -> list[str]:
    """The release at ``commit`` in ``into``, with this checkout's migrations; its database tests."""
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    for folder in migration_folders(service):
        target = into / folder.relative_to(ROOT)
        target.mkdir(parents=True, exist_ok=True)  # a shared component the old release lacked
        for sql in folder.glob("*.sql"):
            shutil.copy(sql, target / sql.name)
    tests = [
        f"{base}/{name}"
        for name in DATABASE_TESTS[service]
        for base in (f"tests/integration/{service}", f"tests/{service}")
        if (into / base / name).is_file()
    ]
    assert tests, f"none of {DATABASE_TESTS[service]} in {commit[:12]}: name that release's database tests"
    return tests


def run_old_tests(tree: Path, tests: list[str]) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the old release's packages before this checkout's (installed in the venv).
    env = {**os.environ, "PYTHONPATH": str(tree), "TZ": "UTC"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not live_stack", *tests]
    return subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.mark.parametrize("service", sorted(DATABASE_TESTS))
def test_the_previous_release_runs_on_this_schema(service: str, tmp_path: Path) -> None:
    commit = previous_release(service)
    if commit is None:
        pytest.skip(f"{service}: every migration came with its first release, none ran on another schema")
    tests = export_with_our_schema(service, commit, tmp_path)
    result = run_old_tests(tmp_path, tests)
    assert result.returncode == 0, f"{service} at {commit[:12]} on this schema:\n{result.stdout[-4000:]}"
    assert " passed" in result.stdout.splitlines()[-1]


def test_the_check_fails_when_a_migration_breaks_the_previous_release(tmp_path: Path) -> None:
    commit = previous_release("notifier")
    assert commit is not None
    tests = export_with_our_schema("notifier", commit, tmp_path)
    (tmp_path / "notifier" / "sql" / "9999_break.sql").write_text(
        "ALTER TABLE notifications RENAME COLUMN recipient TO recipient_address;\n"
    )
    result = run_old_tests(tmp_path, tests[:1])
    assert result.returncode != 0
    assert "recipient" in result.stdout
