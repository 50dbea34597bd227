"""The load's pacing: all clients together start at most the configured number of orders a second."""

from __future__ import annotations

import asyncio
import time

from tests.chaos.load import LoadClient


async def test_paced_starts_are_spread_at_the_rate_over_every_client() -> None:
    client = LoadClient("http://127.0.0.1:9", rate_per_s=20)
    started = time.monotonic()
    await asyncio.gather(*(client._paced() for _ in range(5)))
    # Five starts at 20/s: the first at once, the last 4 slots (0.2 s) later.
    assert 0.18 <= time.monotonic() - started < 0.5


async def test_slots_missed_while_busy_are_not_made_up_in_a_burst() -> None:
    client = LoadClient("http://127.0.0.1:9", rate_per_s=20)
    await client._paced()
    await asyncio.sleep(0.3)  # every client busy on a slow order: six slots go by unused
    started = time.monotonic()
    await client._paced()
    await client._paced()
    assert time.monotonic() - started >= 0.04


async def test_unpaced_clients_do_not_wait() -> None:
    client = LoadClient("http://127.0.0.1:9")
    started = time.monotonic()
    await asyncio.gather(*(client._paced() for _ in range(50)))
    assert time.monotonic() - started < 0.05
