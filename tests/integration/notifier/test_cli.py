"""``python -m notifier migrate | serve`` as deploy.sh runs them, and ``resend`` as an operator does."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime

import aiohttp
import asyncpg

from tests.integration.notifier.api.conftest import seed
from tests.integration.notifier.conftest import REPO_TEMPLATES
from tests.integration.notifier.helpers import wait_until
from tests.net import free_port

ROOT = REPO_TEMPLATES.parent
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT")


def environment(database: str, jwt_keys: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "test",
        "LOG_FORMAT": "console",
        "NOTIFICATION_DB_NAME": database,
        "JWT_PUBLIC_KEY_FILE": jwt_keys["jwt_public_key_file"],
        "JWT_PRIVATE_KEY_FILE": jwt_keys["jwt_private_key_file"],
        **extra,
    }


def test_migrate_applies_the_schema_once(
    database_factory: Callable[[str], str], jwt_keys: dict[str, str]
) -> None:
    env = environment(database_factory("notifier_cli"), jwt_keys)

    def migrate() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "notifier", "migrate"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "applied 2 migration(s): notifier/0001_notifications, notifier/0002_held_and_resend" in migrate()
    assert "applied 0 migration(s)" in migrate()


def test_bad_settings_stop_start_up_with_a_clear_message(jwt_keys: dict[str, str]) -> None:
    env = environment("x", jwt_keys, NOTIFIER_PORT="not-a-port")
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NOTIFIER_PORT" in result.stderr


async def test_serve_answers_ready_on_the_given_port(
    notifications_db: str, rabbitmq_vhost: str, redis_flushed: int, jwt_keys: dict[str, str]
) -> None:
    port = free_port()
    env = environment(notifications_db, jwt_keys, RABBITMQ_VHOST=rabbitmq_vhost, REDIS_DB=str(redis_flushed))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "serve", "--port", str(port), cwd=ROOT, env=env
    )

    async def ready() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/health/ready") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    try:
        assert await wait_until(ready, timeout_s=20)
    finally:
        process.terminate()
        assert await process.wait() == 0


async def run_resend(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "resend",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    # stdout also has the log lines (console format, timestamp first); keep what the command says.
    said = [line for line in stdout.decode().splitlines() if not LOG_LINE_RE.match(line)]
    return process.returncode, "\n".join(said), stderr.decode()


async def test_resend_command_requeues_by_id_and_by_filter(
    pool: asyncpg.Pool, notifications_db: str, rabbitmq_vhost: str, jwt_keys: dict[str, str]
) -> None:
    env = environment(notifications_db, jwt_keys, RABBITMQ_VHOST=rabbitmq_vhost)
    since: datetime = await pool.fetchval("SELECT now()")
    owner = str(uuid.uuid4())
    failed, dead, sent = [await seed(pool, owner, status=s) for s in ("failed", "dead", "sent")]
    window = ["--from", since.isoformat(), "--template", "user.registered"]

    code, out, _ = await run_resend(env, "--status", "dead", *window, "--dry-run")
    assert (code, out.splitlines()) == (0, [f"would resend {dead}", "1 notification(s) match"])

    code, out, err = await run_resend(env, failed, sent)
    assert code == 1
    assert out.splitlines() == [f"resent {failed} (resend 1)"]
    assert f"refused {sent}: only failed or dead notifications can be resent; this one is sent" in err

    code, out, _ = await run_resend(env, "--status", "failed", "--status", "dead", *window)
    assert (code, out.splitlines()) == (0, [f"resent {dead}", "1 notification(s) resent"])
    statuses = [
        await pool.fetchval("SELECT status FROM notifications WHERE id = $1", i) for i in (failed, dead)
    ]
    assert statuses == ["queued", "queued"]


async def test_resend_command_refuses_bad_arguments(
    notifications_db: str, rabbitmq_vhost: str, jwt_keys: dict[str, str]
) -> None:
    env = environment(notifications_db, jwt_keys, RABBITMQ_VHOST=rabbitmq_vhost)
    assert (await run_resend(env))[0] == 2  # neither ids nor --status
    assert (await run_resend(env, str(uuid.uuid4()), "--status", "failed"))[0] == 2
    code, _, err = await run_resend(env, "--status", "failed", "--from", "2026-11-25T19:00")
    assert code == 2
    assert "no time zone" in err
    code, _, err = await run_resend(env, "--status", "failed", "--to", "9999-12-31T23:59:59-14:00")
    assert code == 2
    assert "created_to: Value error, is out of range once converted to UTC" in err
