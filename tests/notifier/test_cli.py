"""``python -m notifier migrate | serve`` as deploy.sh runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

import aiohttp

from tests.net import free_port
from tests.notifier.conftest import REPO_TEMPLATES
from tests.notifier.helpers import wait_until

ROOT = REPO_TEMPLATES.parent


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
