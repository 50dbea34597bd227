"""The guard that keeps this layer honest: a connection attempt fails the test."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.unit.conftest import NetworkUsed


def test_a_blocking_connect_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(NetworkUsed):
        sock.connect(("127.0.0.1", 5432))


async def test_an_asyncio_connection_is_refused() -> None:
    with pytest.raises(NetworkUsed):
        await asyncio.open_connection("127.0.0.1", 6379)
