from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from user_api.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "USER_DB_NAME": settings.user_db_name,
        "REDIS_DB": str(settings.redis_db),
        "JWT_PUBLIC_KEY_FILE": str(settings.jwt_public_key_file),
        "JWT_PRIVATE_KEY_FILE": str(settings.jwt_private_key_file),
        "LOG_FORMAT": "console",
        **extra,
    }


def test_create_admin_creates_then_promotes(settings: Settings) -> None:
    cmd = [sys.executable, "-m", "user_api", "create-admin", "Boss@Example.com"]
    first = subprocess.run(
        cmd,
        env=_env(settings, ADMIN_PASSWORD="a strong password"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert "created admin boss@example.com" in first.stdout
    again = subprocess.run(
        cmd,
        env=_env(settings, ADMIN_PASSWORD="another password"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert "promoted admin boss@example.com" in again.stdout


def test_create_admin_without_a_password_or_terminal_refuses(settings: Settings) -> None:
    env = _env(settings)
    env.pop("ADMIN_PASSWORD", None)
    result = subprocess.run(
        [sys.executable, "-m", "user_api", "create-admin", "x@example.com"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 2
    assert "ADMIN_PASSWORD" in result.stderr


def test_create_admin_refuses_a_short_password(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "user_api", "create-admin", "y@example.com"],
        env=_env(settings, ADMIN_PASSWORD="short"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "password" in result.stderr
