"""Every SQL statement of order_api. Functions take a connection or pool first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from common.db import Connection, Executor

ORDER_COLUMNS = """
    id::text AS id, user_id::text AS user_id, status, currency, total, contact::text AS contact,
    created_at, updated_at
"""

# An order, its lines, its first history entry, its outbox event and (with an Idempotency-Key)
# the key's record, in one statement: one round trip and its own transaction. Every value the
# response and the event carry is computed by the caller beforehand (the id, created_at), so
# nothing is read back. The key comes first: when a live entry holds it, ``k`` is empty, nothing
# else is written and no row returns. pg_notify is transactional: the relay wakes on commit.
CREATE_ORDER_SQL = """
    WITH k AS (
        INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, response_body)
        SELECT $2::uuid, $13::text, $14::text, $1::uuid, $15::text WHERE $13::text IS NOT NULL
        ON CONFLICT (user_id, idem_key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, order_id = EXCLUDED.order_id,
                response_body = EXCLUDED.response_body, created_at = now()
            WHERE idempotency_keys.created_at < now() - make_interval(secs => $16)
        RETURNING idem_key
    ), o AS (
        INSERT INTO orders (id, user_id, currency, total, contact, created_at, updated_at)
        SELECT $1, $2, $3, $4, $5::jsonb, $6, $6 WHERE $13::text IS NULL OR EXISTS (SELECT FROM k)
        RETURNING id, user_id, status
    ), i AS (
        INSERT INTO order_items (order_id, position, sku, name, quantity, unit_price, line_total)
        SELECT o.id, t.n - 1, t.sku, t.name, t.quantity, t.unit_price, t.line_total
        FROM o, unnest($7::text[], $8::text[], $9::int[], $10::numeric[], $11::numeric[])
            WITH ORDINALITY AS t (sku, name, quantity, unit_price, line_total, n)
    ), h AS (
        INSERT INTO order_status_history (order_id, from_status, to_status, changed_by, reason)
        SELECT o.id, NULL, o.status, o.user_id::text, $12 FROM o
    ), e AS (
        INSERT INTO outbox_events (event_id, event_type, aggregate_id, payload)
        SELECT $17, $18, o.id::text, $19::jsonb FROM o
    )
    SELECT pg_notify($20, $18) FROM o
"""

# Single rows, for tests and tools that build an order step by step; the API uses CREATE_ORDER_SQL.
INSERT_ORDER_SQL = f"""
    INSERT INTO orders (user_id, currency, total, contact)
    VALUES ($1, $2, $3, $4::jsonb)
    RETURNING {ORDER_COLUMNS}
"""

INSERT_ITEM_SQL = """
    INSERT INTO order_items (order_id, position, sku, name, quantity, unit_price, line_total)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

GET_ORDER_SQL = f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"

# An order with its lines and its history, in one round trip (GET /api/orders/{id}): the lines
# and entries come as arrays of anonymous records, in ITEM_FIELDS / HISTORY_FIELDS order.
ITEM_FIELDS = ("sku", "name", "quantity", "unit_price", "line_total")
HISTORY_FIELDS = ("from_status", "to_status", "changed_by", "reason", "changed_at")
GET_ORDER_DETAIL_SQL = f"""
    SELECT {ORDER_COLUMNS},
        ARRAY(SELECT (i.sku, i.name, i.quantity, i.unit_price, i.line_total)
              FROM order_items i WHERE i.order_id = o.id ORDER BY i.position) AS items,
        ARRAY(SELECT (h.from_status, h.to_status, h.changed_by, h.reason, h.changed_at)
              FROM order_status_history h WHERE h.order_id = o.id ORDER BY h.id) AS history
    FROM orders o WHERE o.id = $1
"""

# Every status change goes through this lock (orders.process' decision through the row lock of
# its conditional UPDATE, DECIDE_PENDING_SQL), so concurrent changes of one order serialise and
# the outbox receives its events in the order they happened.
LOCK_ORDER_SQL = f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"

# A status change of a locked order: the new status, its history entry and the order's lines
# (for the event), in one round trip.
CHANGE_STATUS_SQL = f"""
    WITH changed AS (
        UPDATE orders SET status = $2, updated_at = now() WHERE id = $1
        RETURNING {ORDER_COLUMNS}
    ), logged AS (
        INSERT INTO order_status_history (order_id, from_status, to_status, changed_by, reason)
        SELECT $1, $3, $2, $4, $5 FROM changed
    )
    SELECT changed.*,
        ARRAY(SELECT (i.sku, i.name, i.quantity, i.unit_price, i.line_total)
              FROM order_items i WHERE i.order_id = $1 ORDER BY i.position) AS items
    FROM changed
"""

# orders.process' decision on a PENDING order, written in one statement (its own transaction):
# the status, its history entry and its outbox event, only if the order is still PENDING (a row
# comes back then; the caller read it without a lock). The caller built the event from the row it
# read, with its own clock for updated_at, as for a new order. The UPDATE's row lock comes before
# the outbox insert, so the aggregate's event ids still grow in commit order. $9: the event's hold
# in seconds (no NOTIFY then: its producer hands it on, ``common.outbox``), or NULL.
DECIDE_PENDING_SQL = """
    WITH changed AS (
        UPDATE orders SET status = $2, updated_at = $3
        WHERE id = $1 AND status = 'PENDING' AND total = $11 AND currency = $12
        RETURNING id
    ), logged AS (
        INSERT INTO order_status_history (order_id, from_status, to_status, changed_by, reason)
        SELECT id, 'PENDING', $2, $4, $5 FROM changed
    ), added AS (
        INSERT INTO outbox_events (event_id, event_type, aggregate_id, payload, held_until)
        SELECT $6, $7, id::text, $8::jsonb, now() + make_interval(secs => $9::float8) FROM changed
        RETURNING event_type, held_until
    )
    SELECT CASE WHEN held_until IS NULL THEN pg_notify($10, event_type) END AS notified FROM added
"""

GET_ITEMS_SQL = """
    SELECT order_id::text AS order_id, sku, name, quantity, unit_price, line_total
    FROM order_items WHERE order_id = ANY($1::uuid[])
    ORDER BY order_id, position
"""

INSERT_HISTORY_SQL = """
    INSERT INTO order_status_history (order_id, from_status, to_status, changed_by, reason)
    VALUES ($1, $2, $3, $4, $5)
"""

GET_HISTORY_SQL = """
    SELECT from_status, to_status, changed_by, reason, changed_at
    FROM order_status_history WHERE order_id = $1 ORDER BY id
"""

# Filters are fixed fragments with numbered parameters, chosen in list_orders.
LIST_ORDERS_SQL = """
    SELECT {columns} FROM orders {where}
    ORDER BY created_at DESC, id DESC
    LIMIT ${limit} OFFSET ${offset}
"""
COUNT_ORDERS_SQL = "SELECT count(*) FROM orders {where}"
USER_FILTER_SQL = "user_id = ${n}"
STATUS_FILTER_SQL = "status = ${n}"

GET_IDEMPOTENCY_KEY_SQL = """
    SELECT request_hash, order_id::text AS order_id, response_body
    FROM idempotency_keys
    WHERE user_id = $1 AND idem_key = $2 AND created_at >= now() - make_interval(secs => $3)
"""

PURGE_IDEMPOTENCY_KEYS_SQL = """
    DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)
"""


@dataclass(frozen=True)
class NewOrder:
    """Everything CREATE_ORDER_SQL writes; ``items`` are (sku, name, quantity, unit_price, line_total)."""

    order_id: str
    user_id: str
    currency: str
    total: Decimal
    contact_json: str
    created_at: datetime
    items: Sequence[tuple[str, str, int, Decimal, Decimal]]
    reason: str
    event: dict[str, Any]
    event_json: str
    channel: str


@dataclass(frozen=True)
class NewKey:
    key: str
    request_hash: str
    response_body: str
    ttl_s: float


async def create_order(db: Executor, order: NewOrder, key: NewKey | None) -> bool:
    """Write the order in one statement; False (and nothing written) if a live entry holds the key."""
    # unnest() takes the lines column by column.
    columns = [[item[field] for item in order.items] for field in range(5)]
    created = await db.fetchrow(
        CREATE_ORDER_SQL,
        order.order_id,
        order.user_id,
        order.currency,
        order.total,
        order.contact_json,
        order.created_at,
        *columns,
        order.reason,
        key.key if key else None,
        key.request_hash if key else None,
        key.response_body if key else None,
        float(key.ttl_s) if key else 0.0,
        order.event["event_id"],
        order.event["event_type"],
        order.event_json,
        order.channel,
    )
    return created is not None


async def insert_order(
    conn: Connection, *, user_id: str, currency: str, total: Decimal, contact_json: str
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(INSERT_ORDER_SQL, user_id, currency, total, contact_json)
    assert row is not None  # INSERT … RETURNING always returns the row
    return row


async def insert_items(
    conn: Connection, order_id: str, items: Sequence[tuple[str, str, int, Decimal, Decimal]]
) -> None:
    await conn.executemany(
        INSERT_ITEM_SQL,
        [(order_id, position, *item) for position, item in enumerate(items)],
    )


async def get_order(db: Executor, order_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(GET_ORDER_SQL, order_id)
    return row


@dataclass(frozen=True)
class OrderDetail:
    order: asyncpg.Record
    items: list[dict[str, Any]]
    history: list[dict[str, Any]]


async def get_order_detail(db: Executor, order_id: str) -> OrderDetail | None:
    row: asyncpg.Record | None = await db.fetchrow(GET_ORDER_DETAIL_SQL, order_id)
    if row is None:
        return None
    return OrderDetail(
        order=row,
        items=[dict(zip(ITEM_FIELDS, item, strict=True)) for item in row["items"]],
        history=[dict(zip(HISTORY_FIELDS, entry, strict=True)) for entry in row["history"]],
    )


async def lock_order(conn: Connection, order_id: str) -> asyncpg.Record | None:
    if not conn.is_in_transaction():
        raise RuntimeError("a row lock outside a transaction is released at once")
    row: asyncpg.Record | None = await conn.fetchrow(LOCK_ORDER_SQL, order_id)
    return row


async def change_status(
    conn: Connection,
    order_id: str,
    *,
    from_status: str,
    to_status: str,
    changed_by: str,
    reason: str | None,
) -> tuple[asyncpg.Record, list[dict[str, Any]]]:
    """Move a locked order on and record the change; the updated order and its lines."""
    row: asyncpg.Record | None = await conn.fetchrow(
        CHANGE_STATUS_SQL, order_id, to_status, from_status, changed_by, reason
    )
    assert row is not None  # the caller holds the row lock: it exists
    return row, [dict(zip(ITEM_FIELDS, item, strict=True)) for item in row["items"]]


@dataclass(frozen=True)
class PendingDecision:
    """What DECIDE_PENDING_SQL writes: the new status, its history entry, its outbox event.

    Written only if the order is PENDING with ``total`` and ``currency``: what it was decided on.
    """

    order_id: str
    total: Decimal
    currency: str
    to_status: str
    updated_at: datetime
    changed_by: str
    reason: str
    event: dict[str, Any]
    event_json: str
    hold_s: float | None
    channel: str


async def decide_pending(db: Executor, decision: PendingDecision) -> bool:
    """Write the decision if the order is still PENDING; False if it was changed meanwhile."""
    row = await db.fetchrow(
        DECIDE_PENDING_SQL,
        decision.order_id,
        decision.to_status,
        decision.updated_at,
        decision.changed_by,
        decision.reason,
        decision.event["event_id"],
        decision.event["event_type"],
        decision.event_json,
        decision.hold_s,
        decision.channel,
        decision.total,
        decision.currency,
    )
    return row is not None


async def get_items(db: Executor, order_ids: Sequence[str]) -> list[asyncpg.Record]:
    if not order_ids:
        return []
    return list(await db.fetch(GET_ITEMS_SQL, list(order_ids)))


async def insert_history(
    conn: Connection,
    order_id: str,
    *,
    from_status: str | None,
    to_status: str,
    changed_by: str,
    reason: str | None,
) -> None:
    await conn.execute(INSERT_HISTORY_SQL, order_id, from_status, to_status, changed_by, reason)


async def get_history(db: Executor, order_id: str) -> list[asyncpg.Record]:
    return list(await db.fetch(GET_HISTORY_SQL, order_id))


async def list_orders(
    db: Executor, *, user_id: str | None, status: str | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    clauses: list[str] = []
    args: list[Any] = []
    if user_id is not None:
        args.append(user_id)
        clauses.append(USER_FILTER_SQL.format(n=len(args)))
    if status is not None:
        args.append(status)
        clauses.append(STATUS_FILTER_SQL.format(n=len(args)))
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    list_sql = LIST_ORDERS_SQL.format(
        columns=ORDER_COLUMNS, where=where, limit=len(args) + 1, offset=len(args) + 2
    )
    rows = await db.fetch(list_sql, *args, limit, offset)
    total: int = await db.fetchval(COUNT_ORDERS_SQL.format(where=where), *args)
    return list(rows), total


async def get_idempotency_key(db: Executor, user_id: str, key: str, *, ttl_s: float) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(GET_IDEMPOTENCY_KEY_SQL, user_id, key, float(ttl_s))
    return row


async def purge_idempotency_keys(db: Executor, *, ttl_s: float) -> int:
    result: str = await db.execute(PURGE_IDEMPOTENCY_KEYS_SQL, float(ttl_s))
    return int(result.split()[-1])
