"""common.outbox.HandedOnMarks: the held events a producer handed on, marked a window at a time."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg

from common.contexts import PG_POOL
from common.outbox import HandedOnMarks
from tests.integration.order_api.outbox_tools import add_test_event, hold_event
from tests.openapi_check import CheckedClient


class FlakyPool:
    """The pool, counting statements; the first ``failures`` of them fail as a lost server would."""

    def __init__(self, pool: asyncpg.Pool, failures: int = 0) -> None:
        self.pool = pool
        self.failures = failures
        self.statements = 0

    async def execute(self, query: str, *args: Any) -> str:
        self.statements += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("connection lost")
        return await self.pool.execute(query, *args)


async def held_events(pool: asyncpg.Pool, count: int) -> list[str]:
    events = [await add_test_event(pool, f"marks-{n}", 1) for n in range(count)]
    for event in events:
        await hold_event(pool, event, 600)
    return [event["event_id"] for event in events]


async def handed_on(pool: asyncpg.Pool, event_ids: list[str]) -> list[bool]:
    rows = await pool.fetch(
        "SELECT event_id::text AS event_id, published_at IS NOT NULL AND held_until IS NULL AS done"
        " FROM outbox_events WHERE event_id = ANY($1::uuid[])",
        event_ids,
    )
    done = {row["event_id"]: row["done"] for row in rows}
    return [done[event_id] for event_id in event_ids]


async def test_the_marks_of_one_window_are_one_statement(client: CheckedClient) -> None:
    pool = client.app[PG_POOL]
    event_ids = await held_events(pool, 3)
    counting = FlakyPool(pool)
    marks = HandedOnMarks(cast(asyncpg.Pool, counting), linger_s=0.2)

    for event_id in event_ids:
        marks.add(event_id)
    assert await handed_on(pool, event_ids) == [False] * 3  # the window is still open
    await asyncio.sleep(0.5)

    assert await handed_on(pool, event_ids) == [True] * 3
    assert counting.statements == 1
    await marks.aclose()
    assert counting.statements == 1  # nothing left to write


async def test_marks_that_could_not_be_written_are_tried_again(client: CheckedClient) -> None:
    pool = client.app[PG_POOL]
    event_ids = await held_events(pool, 2)
    flaky = FlakyPool(pool, failures=1)
    marks = HandedOnMarks(cast(asyncpg.Pool, flaky), linger_s=0.01, retry_s=0.2)

    marks.add(event_ids[0])
    await asyncio.sleep(0.1)
    assert flaky.statements == 1
    marks.add(event_ids[1])  # while the first waits for its retry: both go in it
    await asyncio.sleep(0.4)

    assert await handed_on(pool, event_ids) == [True, True]
    assert flaky.statements == 2
    await marks.aclose()


async def test_closing_writes_the_marks_still_pending(client: CheckedClient) -> None:
    pool = client.app[PG_POOL]
    event_ids = await held_events(pool, 2)
    marks = HandedOnMarks(pool, linger_s=60)

    for event_id in event_ids:
        marks.add(event_id)
    await marks.aclose()

    assert await handed_on(pool, event_ids) == [True, True]
