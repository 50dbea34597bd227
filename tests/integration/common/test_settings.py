from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.jwt import load_public_key
from common.settings import SettingsError, load_settings
from user_api.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_a_malformed_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PORT", "fivefourthreetwo")
    with pytest.raises(SettingsError, match="DB_PORT"):
        load_settings(Settings)


def test_production_refuses_example_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DB_PASSWORD", "secure_password")
    monkeypatch.setenv("RABBITMQ_PASSWORD", "a-real-one-9f8e7d")
    with pytest.raises(SettingsError, match="DB_PASSWORD"):
        load_settings(Settings)
    monkeypatch.setenv("DB_PASSWORD", "another-real-one-1a2b3c")
    monkeypatch.setenv("RABBITMQ_PASSWORD", "admin123")
    with pytest.raises(SettingsError, match="RABBITMQ_PASSWORD"):
        load_settings(Settings)


def test_production_refuses_missing_keys_and_development_generates_them(tmp_path: Path) -> None:
    keys = {"jwt_public_key_file": tmp_path / "pub.pem", "jwt_private_key_file": tmp_path / "priv.pem"}
    settings = Settings(**keys)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_FILE"):
        load_public_key(settings, production=True)
    load_public_key(settings, production=False)
    assert (tmp_path / "priv.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_the_service_exits_with_the_variable_named() -> None:
    env = {**os.environ, "REDIS_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "user_api", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "REDIS_PORT" in result.stderr


def test_the_service_refuses_to_start_in_production_without_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "APP_ENV": "production",
        "DB_PASSWORD": "a-real-password-1",
        "RABBITMQ_PASSWORD": "a-real-password-2",
        "REDIS_PASSWORD": "a-real-password-3",
        "JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem"),
        "JWT_PRIVATE_KEY_FILE": str(tmp_path / "missing-private.pem"),
        "DB_HOST": "127.0.0.1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "user_api", "serve", "--port", "18099"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "JWT_PUBLIC_KEY_FILE" in result.stdout + result.stderr
