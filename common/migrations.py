"""Forward-only SQL migrations: numbered files, checksummed, applied under an advisory lock.

Files are named ``NNNN_description.sql`` in a component's ``sql/`` folder. Each runs in its own
transaction. An applied migration whose file has since changed stops the run: history is
fixed by adding a new migration, never by editing an old one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from common.errors import ServiceError

log = structlog.get_logger(__name__)
MIGRATION_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# One arbitrary constant for every service: each service has its own database, and the lock
# only needs to serialise runners against the same database.
ADVISORY_LOCK_KEY = 0x6D696772  # "migr"

# A database can take migrations from several components (a service's own ``sql/`` and shared
# pieces such as the outbox); each keeps its own numbering.
CREATE_TABLE_SQL = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        component  text NOT NULL,
        version    integer NOT NULL,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (component, version)
    )
"""
APPLIED_SQL = "SELECT version, name, checksum FROM schema_migrations WHERE component = $1 ORDER BY version"
RECORD_SQL = "INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)"


class MigrationError(ServiceError, RuntimeError):
    """The migration folder and the database's history disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = MIGRATION_FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migrations share a version number")
    return migrations


async def _migrate_component(conn: asyncpg.Connection, component: str, folder: Path) -> list[str]:
    migrations = discover(folder)
    applied = {row["version"]: row for row in await conn.fetch(APPLIED_SQL, component)}
    known = {m.version for m in migrations}
    for version in applied:
        if version not in known:
            raise MigrationError(f"{component}: migration {version:04d} is applied but its file is missing")
    done = []
    for migration in migrations:
        row = applied.get(migration.version)
        label = f"{component}/{migration.version:04d}_{migration.name}"
        if row is not None:
            if row["checksum"] != migration.checksum:
                raise MigrationError(f"{label} was edited after it was applied; add a new migration instead")
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(RECORD_SQL, component, migration.version, migration.name, migration.checksum)
        log.info("migration_applied", migration=label)
        done.append(label)
    return done


async def migrate(conn: asyncpg.Connection, components: Sequence[tuple[str, Path]]) -> list[str]:
    """Apply pending migrations of each (component, folder) in order; return those applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(CREATE_TABLE_SQL)
        done = []
        for component, folder in components:
            done += await _migrate_component(conn, component, folder)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def ensure_database(admin_dsn: str, database: str) -> bool:
    """Create ``database`` if it does not exist (development and tests). True if created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists:
            return False
        # Identifiers cannot be parameters; quote_ident does the escaping server-side.
        quoted = await conn.fetchval("SELECT quote_ident($1)", database)
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def migrate_dsn(dsn: str, components: Sequence[tuple[str, Path]]) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, components)
    finally:
        await conn.close()
