"""Test tools around the real RabbitMQ: a TCP proxy that can cut the broker off, and a queue reader.

The proxy is how tests make RabbitMQ "unreachable" and "back" without touching the broker that
other suites share: the relay connects through it, and stopping it refuses and drops connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
import dramatiq
from pamqp.commands import Basic

from common.amqp import dramatiq_queue_arguments
from tests.net import free_port


class TcpProxy:
    def __init__(self, target_port: int = 5672) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def stop(self) -> None:
        """Stop listening and drop every open connection, like a broker that went away."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await asyncio.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.1)


class QueueReader:
    """Reads (and acks) everything in the given queues of a vhost, keeping what it has seen."""

    def __init__(self, vhost: str, queues: tuple[str, ...] = ("orders", "notifications")) -> None:
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        self.queues = queues
        self.messages: dict[str, list[dramatiq.Message[Any]]] = defaultdict(list)
        self.properties: dict[str, list[Basic.Properties]] = defaultdict(list)
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def open(self, *, purge: bool = True) -> None:
        self._connection = await aiormq.connect(self.url)
        self._channel = await self._connection.channel()
        for queue in self.queues:
            await self._channel.queue_declare(queue, durable=True, arguments=dramatiq_queue_arguments(queue))
            if purge:
                await self._channel.queue_purge(queue)

    async def drain(self) -> None:
        assert self._channel is not None
        for queue in self.queues:
            while True:
                delivered = await self._channel.basic_get(queue, no_ack=True)
                if isinstance(delivered.delivery, Basic.GetEmpty):
                    break
                self.messages[queue].append(dramatiq.Message.decode(delivered.body))
                self.properties[queue].append(delivered.header.properties)

    def event_ids(self, queue: str) -> list[str]:
        return [message.args[0]["event_id"] for message in self.messages[queue]]

    async def wait_for(self, queue: str, count: int, *, timeout_s: float = 15.0) -> None:
        async def enough() -> bool:
            await self.drain()
            return len(self.messages[queue]) >= count

        await eventually(enough, timeout_s=timeout_s)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
