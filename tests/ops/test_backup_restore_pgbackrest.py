"""scripts/backup.sh with a pgBackRest repository configured (PGBACKREST_STANZA): on a PostgreSQL
cluster of the test's own (initdb on a free port, WAL archived to a repository in a temp folder,
never the machine's shared server), the backup is taken and recorded, and the physical restore
that docs/runbooks.md describes (stop, `pgbackrest --delta restore`, start) brings the rows back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import free_port
from tests.ops.test_backup_restore import ROOT

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/nonexistent"))
STANZA = "test"


def as_owner(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run the cluster's commands as postgres."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.config = base / "pgbackrest.conf"
        self.env = {**os.environ, "PGBACKREST_CONFIG": str(self.config)}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            as_owner(*command), env=self.env, capture_output=True, text=True, timeout=120, check=check
        )

    def psql(self, database: str, sql: str) -> str:
        out = self.run(
            str(PG_BIN / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-XAtc",
            sql,
        )
        return out.stdout.strip()

    def start(self) -> None:
        self.run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "postgres.log"), "-w", "start"
        )

    def stop(self) -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    for tool in ("initdb", "pg_ctl", "psql"):
        if not (PG_BIN / tool).exists():
            pytest.fail(f"{PG_BIN / tool} is missing (apt-get install postgresql)")
    if shutil.which("pgbackrest") is None:
        pytest.fail("pgbackrest is missing (apt-get install pgbackrest)")
    # Not under pytest's temp folder: it is private to the user running the tests, and the
    # cluster runs as postgres when that user is root.
    base = Path(tempfile.mkdtemp(prefix="pgbackrest-test-"))
    cluster = Cluster(base)
    for folder in ("repo", "log", "lock", "spool"):
        (base / folder).mkdir()
    cluster.config.write_text(
        f"[global]\nrepo1-path={base}/repo\nrepo1-retention-full=2\nlog-path={base}/log\n"
        f"lock-path={base}/lock\nspool-path={base}/spool\nstart-fast=y\n"
        f"[{STANZA}]\npg1-path={cluster.data}\npg1-port={cluster.port}\npg1-socket-path={base}\n"
    )
    if os.geteuid() == 0:
        for path in (base, *base.iterdir()):
            shutil.chown(path, "postgres", "postgres")
    cluster.run(str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", "postgres", "--auth=trust")
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {cluster.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
            "wal_level = replica\narchive_mode = on\n"
            f"archive_command = 'pgbackrest --config={cluster.config} --stanza={STANZA} archive-push %p'\n"
        )
    cluster.start()
    try:
        cluster.run("pgbackrest", f"--stanza={STANZA}", "stanza-create")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_backup_with_pgbackrest_and_the_physical_restore_of_the_runbook(
    cluster: Cluster, tmp_path: Path
) -> None:
    for database in ("users", "orders", "notifications"):
        cluster.psql("postgres", f"CREATE DATABASE {database}")
        cluster.psql(
            database, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 500)"
        )
    backups = tmp_path / "backups"
    env = {
        **cluster.env,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(cluster.port),
        "DB_USERNAME": "postgres",
        "DB_PASSWORD": "",
        "USER_DB_NAME": "users",
        "ORDER_DB_NAME": "orders",
        "NOTIFICATION_DB_NAME": "notifications",
        "BACKUP_DIR": str(backups),
        "BACKUP_RABBITMQ": "off",
        "PGBACKREST_STANZA": STANZA,
        "PGBACKREST_TYPE": "full",
    }
    result = subprocess.run(
        [str(ROOT / "scripts/backup.sh")], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (backup,) = backups.iterdir()
    manifest = (backup / "manifest.tsv").read_text()
    assert f"pgbackrest\t{STANZA}\tpgbackrest-info.json\n" in manifest
    assert "table\torder\tpublic.t\t500\n" in manifest
    (info,) = json.loads((backup / "pgbackrest-info.json").read_text())
    assert [b["type"] for b in info["backup"]] == ["full"]
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=backup, capture_output=True, check=False)
    assert check.returncode == 0

    # Lose data after the backup, then restore the cluster as the runbook says.
    cluster.psql("orders", "DELETE FROM t")
    cluster.stop()
    cluster.run(
        "pgbackrest",
        f"--stanza={STANZA}",
        "--delta",
        "--type=immediate",
        "--target-action=promote",
        "restore",
    )
    cluster.start()
    for database in ("users", "orders", "notifications"):
        assert cluster.psql(database, "SELECT count(*) FROM t") == "500", database
