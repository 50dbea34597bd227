"""The unit layer: the rules alone, with in-memory fakes; no server is reached, by construction.

Every test runs with ``socket.connect`` refused, so a rule that quietly needs PostgreSQL, Redis,
RabbitMQ or an HTTP peer fails here by name instead of passing on a developer's machine.
(``socketpair`` — the event loop's self-pipe — never calls ``connect``, so asyncio still works.)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.jwt import ensure_dev_keypair
from common.settings import JwtSettings
from order_api import repository as order_repository
from tests.unit.fakes import FakeOrderRepository, FakePool, FakeRedis, install


class NetworkUsed(AssertionError):
    """A unit test tried to reach a server."""


def _refuse(self: socket.socket, address: Any, *args: Any) -> Any:
    raise NetworkUsed(f"unit tests reach no server; this one tried {address!r}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    return


@pytest.fixture(scope="session")
def jwt_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("unit-keys")
    files = {"jwt_private_key_file": folder / "private.pem", "jwt_public_key_file": folder / "public.pem"}
    ensure_dev_keypair(JwtSettings(**files))
    return files


@pytest.fixture
def pool() -> FakePool:
    return FakePool()


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def orders(monkeypatch: pytest.MonkeyPatch) -> FakeOrderRepository:
    """order_api's repository, in memory, for the test."""
    fake = FakeOrderRepository()
    install(monkeypatch, order_repository, fake)
    return fake
