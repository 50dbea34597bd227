"""Every SQL statement of user_api. Functions take a connection or pool first."""

from __future__ import annotations

from typing import Any

import asyncpg

from common.db import Executor

USER_COLUMNS = """
    id::text AS id, email, name, password_hash, role, phone, notify_email, notify_sms, notify_push,
    push_token, created_at, updated_at
"""

INSERT_USER_SQL = f"""
    INSERT INTO users (email, name, password_hash, role, phone, notify_email, notify_sms, notify_push)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING {USER_COLUMNS}
"""

GET_USER_SQL = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL"

GET_USER_BY_EMAIL_SQL = f"SELECT {USER_COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL"

LIST_USERS_SQL = f"""
    SELECT {USER_COLUMNS} FROM users WHERE deleted_at IS NULL
    ORDER BY created_at, id LIMIT $1 OFFSET $2
"""

COUNT_USERS_SQL = "SELECT count(*) FROM users WHERE deleted_at IS NULL"

SOFT_DELETE_USER_SQL = """
    UPDATE users SET deleted_at = now(), updated_at = now(), push_token = NULL
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING id::text
"""

SET_ROLE_AND_PASSWORD_SQL = f"""
    UPDATE users SET role = $2, password_hash = COALESCE($3, password_hash), updated_at = now()
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING {USER_COLUMNS}
"""

# Columns a PUT may change; the service decides which of them the caller may touch.
UPDATABLE_COLUMNS = frozenset(
    {
        "name",
        "email",
        "phone",
        "push_token",
        "notify_email",
        "notify_sms",
        "notify_push",
        "password_hash",
        "role",
    }
)


async def insert_user(
    db: Executor,
    *,
    email: str,
    name: str,
    password_hash: str,
    role: str,
    phone: str | None,
    notify_email: bool,
    notify_sms: bool,
    notify_push: bool,
) -> asyncpg.Record:
    row: asyncpg.Record | None = await db.fetchrow(
        INSERT_USER_SQL, email, name, password_hash, role, phone, notify_email, notify_sms, notify_push
    )
    assert row is not None  # INSERT … RETURNING always returns the row
    return row


async def get_user(db: Executor, user_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(GET_USER_SQL, user_id)
    return row


async def get_user_by_email(db: Executor, email: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(GET_USER_BY_EMAIL_SQL, email)
    return row


async def list_users(db: Executor, *, limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    rows = await db.fetch(LIST_USERS_SQL, limit, offset)
    total: int = await db.fetchval(COUNT_USERS_SQL)
    return list(rows), total


async def update_user(db: Executor, user_id: str, changes: dict[str, Any]) -> asyncpg.Record | None:
    unknown = set(changes) - UPDATABLE_COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if not changes:
        return await get_user(db, user_id)
    # Column names come from the fixed allow-list above, values are parameters.
    columns = sorted(changes)
    assignments = ", ".join(f"{col} = ${i}" for i, col in enumerate(columns, start=2))
    sql = (
        f"UPDATE users SET {assignments}, updated_at = now() "
        f"WHERE id = $1 AND deleted_at IS NULL RETURNING {USER_COLUMNS}"
    )
    row: asyncpg.Record | None = await db.fetchrow(sql, user_id, *(changes[c] for c in columns))
    return row


async def soft_delete_user(db: Executor, user_id: str) -> bool:
    return await db.fetchval(SOFT_DELETE_USER_SQL, user_id) is not None


async def set_role_and_password(
    db: Executor, user_id: str, *, role: str, password_hash: str | None
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(SET_ROLE_AND_PASSWORD_SQL, user_id, role, password_hash)
    return row
