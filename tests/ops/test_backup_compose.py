"""Compose's backup service, as compose resolves it in every combination: scripts/backup.sh on a
schedule into the `backups` volume, with a pg_dump of the server's major version, healthy only
while a recent complete backup exists (docs/runbooks.md, "Backup and restore")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.config.compose import COMBINATIONS, merged


def major(image: str) -> int:
    match = re.match(r"postgres:(\d+)", image)
    assert match, image
    return int(match.group(1))


@pytest.fixture(params=sorted(COMBINATIONS))
def services(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(merged(request.param)["services"])


def test_backup_runs_backup_sh_on_a_schedule_into_the_backups_volume(services: dict[str, Any]) -> None:
    backup = services["backup"]
    loop = backup["entrypoint"][-1]
    assert "/backup/scripts/backup.sh" in loop
    for part in ("while true", "sleep", "BACKUP_INTERVAL_S"):
        assert part in loop, part
    mounts = {
        (m["type"], m["source"].rsplit("/", 1)[-1], m["target"], m.get("read_only", False))
        for m in backup["volumes"]
    }
    assert ("volume", "backups", "/backups", False) in mounts
    assert ("bind", "scripts", "/backup/scripts", True) in mounts
    assert backup["environment"]["BACKUP_DIR"] == "/backups"
    assert int(backup["environment"]["BACKUP_RETENTION_DAYS"]) >= 1
    assert backup["restart"] == "unless-stopped"
    assert {name for name, dep in backup["depends_on"].items() if dep["condition"] == "service_healthy"} >= {
        "postgres",
        "rabbitmq",
    }


def test_pg_dump_is_the_servers_major_version(services: dict[str, Any]) -> None:
    # pg_dump refuses a newer server; an older server restores a newer pg_dump's archive only
    # sometimes: the same major version is the safe pair.
    assert major(services["backup"]["image"]) == major(services["postgres"]["image"])


def test_healthy_only_while_a_recent_complete_backup_exists(services: dict[str, Any]) -> None:
    check = " ".join(services["backup"]["healthcheck"]["test"])
    # A backup is complete once its manifest is there (backup.sh renames the folder last).
    for part in ("manifest.tsv", "-mmin", "BACKUP_INTERVAL_S"):
        assert part in check, part
