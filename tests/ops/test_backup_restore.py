"""scripts/backup.sh and scripts/restore.sh, round trip, on databases of the test's own.

Users, orders with their history, notifications with their attempts and outbox rows are made by
the services' own code; a backup is taken; the databases are dropped; the restore brings every
row back (compared row by row, not only counted), and the system works on what was restored:
a login through user_api, an order read through order_api, a new order processed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.contexts import PG_POOL
from common.migrations import migrate_dsn
from notifier import repository as notifications
from notifier.app import MIGRATIONS as NOTIFIER_MIGRATIONS
from order_api.app import MIGRATIONS as ORDER_MIGRATIONS
from order_api.app import create_app as create_order_app
from order_api.lifecycle import process_order_created
from order_api.settings import Settings as OrderSettings
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, pg_dsn
from tests.integration.order_api.conftest import order_body
from user_api.app import MIGRATIONS as USER_MIGRATIONS
from user_api.app import create_app as create_user_app
from user_api.settings import Settings as UserSettings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long enough password"
ROLES = ("user", "order", "notification")
# What the postgres image of compose's backup service (postgres:15-bookworm) has that backup.sh
# and lib.sh use.
TOOLS_OF_THE_POSTGRES_IMAGE = (
    "bash",
    "psql",
    "pg_dump",
    "pg_restore",
    "awk",
    "base64",
    "basename",
    "cat",
    "date",
    "dirname",
    "find",
    "grep",
    "id",
    "mkdir",
    "mv",
    "rm",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "xargs",
)
ORDER_CREATED_EVENT_SQL = """
SELECT payload FROM outbox_events
WHERE event_type = 'order.created' AND payload->'data'->'order'->>'id' = $1
"""


def script_env(names: dict[str, str], backup_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DB_NAME")}
    return env | {
        "DB_HOST": PG_HOST,
        "DB_PORT": str(PG_PORT),
        "DB_USERNAME": PG_USER,
        "DB_PASSWORD": PG_PASSWORD,
        "USER_DB_NAME": names["user"],
        "ORDER_DB_NAME": names["order"],
        "NOTIFICATION_DB_NAME": names["notification"],
        "BACKUP_DIR": str(backup_dir),
    }


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def snapshot(database: str) -> dict[str, list[str]]:
    """Every row of every table, as JSON text, sorted: what "every row is back" compares."""
    conn = await asyncpg.connect(pg_dsn(database))
    try:
        tables = [
            r["t"]
            for r in await conn.fetch("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {
            table: sorted(r["j"] for r in await conn.fetch(f'SELECT to_jsonb(t)::text AS j FROM "{table}" t'))  # noqa: S608 - names from pg_tables
            for table in sorted(tables)
        }
    finally:
        await conn.close()


async def drop(database: str) -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    finally:
        await conn.close()


class System:
    """user_api and order_api on the test's databases, through aiohttp's test client."""

    def __init__(self, aiohttp_client: Any, names: dict[str, str], redis_db: int, jwt_keys: dict[str, str]):
        self._aiohttp_client = aiohttp_client
        self.names = names
        self.redis_db = redis_db
        self.jwt_keys = jwt_keys
        self.users: TestClient[Any, Any]
        self.orders: TestClient[Any, Any]

    async def start(self) -> None:
        common: dict[str, Any] = {
            "app_env": "test",
            "redis_db": self.redis_db,
            "outbox_relay_enabled": False,  # the outbox rows stay, as a backup finds them
            "log_format": "console",
            **self.jwt_keys,
        }
        user_settings = UserSettings(user_db_name=self.names["user"], bcrypt_rounds=4, **common)
        self.users = await self._aiohttp_client(create_user_app(user_settings))
        order_settings = OrderSettings(
            order_db_name=self.names["order"],
            user_service_url=str(self.users.make_url("")).rstrip("/"),
            **common,
        )
        self.orders = await self._aiohttp_client(create_order_app(order_settings))

    async def stop(self) -> None:
        await self.orders.close()
        await self.users.close()

    async def register(self, email: str) -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, "name": "Ada Lovelace", "phone": "+447700900123"}
        answer = await self.users.post("/api/auth/register", json=body)
        assert answer.status == 201, await answer.text()
        return await self.login(email)

    async def login(self, email: str) -> dict[str, Any]:
        answer = await self.users.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status == 200, await answer.text()
        tokens: dict[str, Any] = await answer.json()
        return tokens

    async def order(self, tokens: dict[str, Any], *items: tuple[str, int, str]) -> dict[str, Any]:
        answer = await self.orders.post("/api/orders", json=order_body(*items), headers=auth(tokens))
        assert answer.status == 201, await answer.text()
        order: dict[str, Any] = await answer.json()
        return order

    async def process(self, order_id: str) -> str:
        """orders.process' work: the order.created event from the outbox, as the worker gets it."""
        pool = self.orders.app[PG_POOL]
        payload = await pool.fetchval(ORDER_CREATED_EVENT_SQL, order_id)
        assert payload is not None
        event = json.loads(payload) if isinstance(payload, str) else payload
        return (await process_order_created(pool, event, max_order_total=Decimal("10000"))).status


def auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def notify_with_attempts(database: str, user_id: str) -> None:
    """Two notifications through notifier's repository: one sent after a failed attempt, one failed."""
    pool = await asyncpg.create_pool(pg_dsn(database), min_size=1, max_size=2)
    try:
        for channel, outcomes in (("email", ("transient_error", "sent")), ("sms", ("permanent_error",))):
            notification_id = str(uuid.uuid4())
            inserted = await notifications.insert_notification(
                pool,
                notification_id=notification_id,
                event_id=str(uuid.uuid4()),
                event_type="order.created",
                template="order.created",
                channel=channel,
                user_id=user_id,
                recipient="ada@example.com" if channel == "email" else "+447700900123",
                context={"order": {"id": "x", "total": "25.00"}},
                trace_id=uuid.uuid4().hex,
            )
            assert inserted
            async with pool.acquire() as conn:
                for outcome in outcomes:
                    row = await notifications.claim(conn, notification_id, lease_s=60, revive_dead=False)
                    assert row is not None
                    error = None if outcome == "sent" else f"{outcome} from the provider"
                    provider_id = "msg-1" if outcome == "sent" else None
                    await notifications.finish_attempt(
                        conn, row, outcome=outcome, error=error, provider_message_id=provider_id
                    )
    finally:
        await pool.close()


@pytest.fixture
async def names(database_factory: Callable[[str], str]) -> dict[str, str]:
    made = {role: database_factory(f"backup_{role}") for role in ROLES}
    for role, migrations in zip(ROLES, (USER_MIGRATIONS, ORDER_MIGRATIONS, NOTIFIER_MIGRATIONS), strict=True):
        await migrate_dsn(pg_dsn(made[role]), migrations)
    return made


async def test_backup_drop_restore_and_the_system_works_on_what_was_restored(
    aiohttp_client: Any,
    names: dict[str, str],
    redis_flushed: int,
    jwt_keys: dict[str, str],
    rabbitmq_vhost: str,
    tmp_path: Path,
) -> None:
    system = System(aiohttp_client, names, redis_flushed, jwt_keys)
    await system.start()
    ada = await system.register(f"ada.{uuid.uuid4().hex[:8]}@example.com")
    grace = await system.register(f"grace.{uuid.uuid4().hex[:8]}@example.com")
    kept = await system.order(ada, ("BOOK-1", 2, "12.50"))
    assert await system.process(kept["id"]) == "CONFIRMED"
    cancelled = await system.order(grace, ("PEN-9", 1, "3.00"))
    answer = await system.orders.delete(f"/api/orders/{cancelled['id']}", headers=auth(grace))
    assert answer.status in (200, 204), await answer.text()
    await notify_with_attempts(names["notification"], ada["user"]["id"])
    await system.stop()

    before = {role: await snapshot(names[role]) for role in ROLES}
    assert len(before["user"]["users"]) == 2
    assert len(before["user"]["outbox_events"]) == 2
    assert len(before["order"]["order_status_history"]) >= 4  # created twice, confirmed, cancelled
    assert before["order"]["outbox_events"]
    assert len(before["notification"]["notification_attempts"]) == 3

    env = script_env(names, tmp_path / "backups") | {"BACKUP_RABBITMQ": "required"}
    backed_up = run("backup.sh", env)
    assert backed_up.returncode == 0, backed_up.stderr
    (backup,) = (tmp_path / "backups").iterdir()
    manifest = (backup / "manifest.tsv").read_text()
    assert f"table\torder\tpublic.orders\t{len(before['order']['orders'])}\n" in manifest
    vhosts = {v["name"] for v in json.loads((backup / "rabbitmq.json").read_text())["vhosts"]}
    assert rabbitmq_vhost in vhosts

    for role in ROLES:
        await drop(names[role])

    started = time.monotonic()
    restored = run("restore.sh", env, str(backup))
    elapsed = time.monotonic() - started
    assert restored.returncode == 0, restored.stdout + restored.stderr
    print(f"restore of {sum(len(r) for b in before.values() for r in b.values())} rows took {elapsed:.2f} s")
    assert {role: await snapshot(names[role]) for role in ROLES} == before

    # The system works on the restored databases.
    await system.start()
    again = await system.login(ada["user"]["email"])
    read = await system.orders.get(f"/api/orders/{kept['id']}", headers=auth(again))
    assert read.status == 200, await read.text()
    assert (await read.json())["status"] == "CONFIRMED"
    fresh = await system.order(again, ("MUG-3", 1, "8.00"))
    assert await system.process(fresh["id"]) == "CONFIRMED"
    await system.stop()


async def test_restore_refuses_to_overwrite_damaged_or_miscounted_backups(
    names: dict[str, str], tmp_path: Path
) -> None:
    env = script_env(names, tmp_path / "backups") | {"BACKUP_RABBITMQ": "off"}
    assert run("backup.sh", env).returncode == 0
    (backup,) = (tmp_path / "backups").iterdir()
    assert "rabbitmq" not in (backup / "manifest.tsv").read_text()
    before = await snapshot(names["user"])

    refused = run("restore.sh", env, str(backup))
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert await snapshot(names["user"]) == before

    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    with (damaged / "order.dump").open("r+b") as dump:
        dump.seek(40)
        dump.write(b"\xff\xff")
    result = run("restore.sh", env, str(damaged), "--force")
    assert result.returncode != 0
    assert "damaged" in result.stderr
    assert await snapshot(names["user"]) == before  # refused before touching anything

    # A manifest that claims a row the dump lacks: restored (--force), then the check fails.
    miscounted = tmp_path / "miscounted"
    shutil.copytree(backup, miscounted)
    manifest = (miscounted / "manifest.tsv").read_text()
    line = next(
        line for line in manifest.splitlines() if line.startswith("table\tuser\tpublic.schema_migrations\t")
    )
    rows = int(line.rsplit("\t", 1)[1])
    (miscounted / "manifest.tsv").write_text(
        manifest.replace(line, line.rsplit("\t", 1)[0] + f"\t{rows + 1}")
    )
    sums = subprocess.run(
        ["sha256sum", *sorted(p.name for p in miscounted.iterdir() if p.name != "SHA256SUMS")],
        cwd=miscounted,
        capture_output=True,
        text=True,
        check=True,
    )
    (miscounted / "SHA256SUMS").write_text(sums.stdout)
    result = run("restore.sh", env, str(miscounted), "--force")
    assert result.returncode != 0
    assert "public.schema_migrations has" in result.stderr
    assert await snapshot(names["user"]) == before


async def test_backups_past_the_retention_are_pruned_but_never_the_newest(
    names: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    env = script_env(names, root) | {"BACKUP_RABBITMQ": "off", "BACKUP_RETENTION_DAYS": "1"}
    old = root / "20200101T000000Z"
    old.mkdir(parents=True)
    (old / "manifest.tsv").write_text("backup\t20200101T000000Z\n")
    unfinished = root / "20200102T000000Z"  # no manifest: not a backup of ours, left alone
    unfinished.mkdir()
    two_days_ago = time.time() - 2 * 86400
    for folder in (old, unfinished):
        os.utime(folder, (two_days_ago, two_days_ago))
    result = run("backup.sh", env)
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in root.iterdir())
    assert "20200101T000000Z" not in left
    assert "20200102T000000Z" in left
    assert len(left) == 2


async def test_backup_with_only_the_postgres_image_tools_reads_the_management_api(
    names: dict[str, str], tmp_path: Path, aiohttp_server: Any
) -> None:
    """compose's backup service runs in the postgres image: bash, the PostgreSQL client and
    coreutils, no curl and no rabbitmqctl. The definitions then come over bash's own TCP from the
    management API (here a stand-in that checks the credentials, on a port of its own)."""
    definitions = {"rabbit_version": "3.13.7", "vhosts": [{"name": "/"}], "queues": [{"name": "orders"}]}
    seen: list[str] = []

    async def api(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"backup:s3cret").decode():
            return web.json_response({"error": "not_authorised"}, status=401)
        return web.json_response(definitions)

    app = web.Application()
    app.router.add_get("/api/definitions", api)
    server = await aiohttp_server(app)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in TOOLS_OF_THE_POSTGRES_IMAGE:
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    env = script_env(names, tmp_path / "backups") | {
        "PATH": str(tools),
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_MANAGEMENT_PORT": str(server.port),
        "RABBITMQ_USERNAME": "backup",
        "RABBITMQ_PASSWORD": "s3cret",
        "BACKUP_RABBITMQ": "required",
    }
    result = await asyncio.to_thread(run, "backup.sh", env)
    assert result.returncode == 0, result.stdout + result.stderr
    (backup,) = (tmp_path / "backups").iterdir()
    assert json.loads((backup / "rabbitmq.json").read_text()) == definitions
    assert "rabbitmq\trabbitmq.json\tmanagement-api\n" in (backup / "manifest.tsv").read_text()

    wrong = await asyncio.to_thread(run, "backup.sh", env | {"RABBITMQ_PASSWORD": "wrong"})
    assert wrong.returncode != 0
    assert "could not export the RabbitMQ definitions" in wrong.stderr
    assert len(list((tmp_path / "backups").iterdir())) == 1  # no partial backup left behind
