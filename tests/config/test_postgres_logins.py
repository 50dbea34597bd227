"""deploy.sh local against a PostgreSQL configured as Debian ships it (scram-sha-256 over TCP,
peer over the Unix socket, no password for postgres): a server of the test's own, on a free port.
Without .env the login is refused with a message that says what to do; with .env.example's role
deploy.sh creates the role and its databases as the postgres system user, and the services' login
works."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.config.conftest import ROOT
from tests.net import free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@dataclass
class Server:
    port: int
    socket_dir: Path


@pytest.fixture(scope="module")
def debian_like_server() -> Iterator[Server]:
    if not BINARIES or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries and root (to run them as the postgres user)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user")
    bin_dir = BINARIES[-1].parent
    # Not under pytest's temporary folder: that one is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="pg-scram-"))
    shutil.chown(base, "postgres")
    data, port = base / "data", free_port()

    def as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    made = as_postgres(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth-host=scram-sha-256",
        "--auth-local=peer",
    )
    assert made.returncode == 0, made.stderr
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    started = as_postgres(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "start"
    )
    assert started.returncode == 0, started.stderr
    try:  # pg_ctl start waits until the server accepts connections
        yield Server(port, base)
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def ensure_roles(server: Server, **env: str) -> subprocess.CompletedProcess[str]:
    """deploy.sh's ensure_roles (and the login check it ends with), alone."""
    script = (
        'set -euo pipefail; . scripts/lib.sh; eval "$(sed -n '
        "'/^ensure_roles()/,/^}/p; /^check_db_login()/,/^}/p' scripts/deploy.sh)\"; ensure_roles"
    )
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(server.port),
        "DB_SOCKET_DIR": str(server.socket_dir),
        "RABBITMQ_USERNAME": "guest",  # leave the machine's RabbitMQ alone
        **env,
    }
    return subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_env_the_refused_login_says_what_to_do(debian_like_server: Server) -> None:
    result = ensure_roles(debian_like_server)
    assert result.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{debian_like_server.port} refused DB_USERNAME=postgres" in result.stderr
    assert "password authentication failed" in result.stderr
    assert "cp .env.example .env" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_role_of_its_own_is_created_as_the_postgres_system_user(debian_like_server: Server) -> None:
    role, password = f"svc_{uuid.uuid4().hex[:8]}", "a-password-for-the-test"
    names = {"USER_DB_NAME": f"{role}_users", "ORDER_DB_NAME": f"{role}_orders"}
    names["NOTIFICATION_DB_NAME"] = f"{role}_notifications"
    env = {"DB_USERNAME": role, "DB_PASSWORD": password, **names}
    for _ in range(2):  # a second run finds everything there
        result = ensure_roles(debian_like_server, **env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "as the postgres system user over the Unix socket" in result.stdout

    async def owners() -> dict[str, str]:
        connection = await asyncpg.connect(
            host="127.0.0.1", port=debian_like_server.port, user=role, password=password, database="postgres"
        )
        try:
            rows = await connection.fetch(
                "SELECT datname, pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = ANY($1)",
                list(names.values()),
            )
            return {row["datname"]: row["owner"] for row in rows}
        finally:
            await connection.close()

    assert asyncio.run(owners()) == dict.fromkeys(names.values(), role)


def test_a_wrong_password_for_that_role_is_refused_clearly(debian_like_server: Server) -> None:
    role = f"svc_{uuid.uuid4().hex[:8]}"
    created = ensure_roles(debian_like_server, DB_USERNAME=role, DB_PASSWORD="the-right-one")
    assert created.returncode == 0, created.stderr
    script = (
        'set -euo pipefail; . scripts/lib.sh; eval "$(sed -n '
        "'/^check_db_login()/,/^}/p' scripts/deploy.sh)\"; check_db_login"
    )
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={
            **os.environ,
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(debian_like_server.port),
            "DB_USERNAME": role,
            "DB_PASSWORD": "a-wrong-one",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"refused DB_USERNAME={role}" in result.stderr
