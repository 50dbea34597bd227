"""Fixtures shared by every suite: real PostgreSQL, Redis and RabbitMQ, isolated per test session.

Each session gets throw-away databases (``t_<name>_<random>``), its own RabbitMQ vhost and a
Redis database index (``TEST_REDIS_DB``), so two suites can run side by side on one machine.
Nothing is skipped when a service is missing: the fixture fails and says which.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

PG_HOST = os.environ.get("DB_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DB_PORT", "5432"))
PG_USER = os.environ.get("DB_USERNAME", "postgres")
PG_PASSWORD = os.environ.get("DB_PASSWORD", "")
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))


def pg_dsn(database: str) -> str:
    auth = PG_USER + (f":{PG_PASSWORD}" if PG_PASSWORD else "")
    return f"postgresql://{auth}@{PG_HOST}:{PG_PORT}/{database}"


async def _admin_async(sql: str) -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    # Runs on its own loop in a thread: fixtures may be called from inside a running test loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _admin_async(sql)).result()


@pytest.fixture(scope="session")
def database_factory() -> Iterator[Callable[[str], str]]:
    """Create empty databases for the session; returns their names. Dropped at the end."""
    created: list[str] = []

    def make(label: str) -> str:
        name = f"t_{label}_{uuid.uuid4().hex[:10]}"
        try:
            _admin(f'CREATE DATABASE "{name}"')
        except OSError as exc:
            pytest.fail(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: {exc}")
        created.append(name)
        return name

    yield make
    for name in created:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_flushed() -> Iterator[int]:
    """A clean Redis database for one test; yields its index."""
    client = redis.Redis(host=os.environ.get("REDIS_HOST", "127.0.0.1"), port=6379, db=TEST_REDIS_DB)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable: {exc}")
    yield TEST_REDIS_DB
    client.flushdb()
    client.close()


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """A private RabbitMQ vhost for the session (guest has full rights on it)."""
    vhost = f"test_{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl(
            "set_permissions", "-p", vhost, os.environ.get("RABBITMQ_USERNAME", "guest"), ".*", ".*", ".*"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot create a RabbitMQ vhost with rabbitmqctl: {exc}")
    yield vhost
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def jwt_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment overrides pointing every service at one freshly generated key pair."""
    folder: Path = tmp_path_factory.mktemp("keys")
    return {
        "jwt_private_key_file": str(folder / "jwt_private.pem"),
        "jwt_public_key_file": str(folder / "jwt_public.pem"),
    }
