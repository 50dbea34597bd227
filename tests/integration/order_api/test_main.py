"""``python -m order_api``: the migrate command and how a bad configuration stops it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "order_api", *args],
        env={**os.environ, "LOG_FORMAT": "console", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_applies_each_migration_once(database_factory: Callable[[str], str]) -> None:
    database = database_factory("orders_cli")
    first = _run("migrate", ORDER_DB_NAME=database)
    assert first.returncode == 0, first.stderr
    assert (
        "applied 4 migration(s): outbox/0001_outbox, outbox/0002_outbox_held, order_api/0001_orders,"
        " order_api/0002_idempotency_without_status" in first.stdout
    )
    again = _run("migrate", ORDER_DB_NAME=database)
    assert again.returncode == 0, again.stderr
    assert "applied 0 migration(s)" in again.stdout


def test_a_bad_setting_stops_start_up_naming_the_variable() -> None:
    result = _run("serve", USER_SERVICE_TIMEOUT_S="-1")
    assert result.returncode == 2
    assert "USER_SERVICE_TIMEOUT_S" in result.stderr
