"""In-memory stand-ins for what the rules talk to: a pool/connection, Redis, repositories.

The repositories are the services' own ``repository`` modules with their functions replaced
(``install``): every service module calls ``repository.<name>(…)`` through the module, so the
rules under test run unchanged. Rows are plain dicts, which is all the rules read of a record.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any, cast

import asyncpg
import pytest

from common.outbox import INSERT_OUTBOX_EVENT_SQL

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class FakeConnection:
    """Records what the rules write through the connection itself (the outbox, NOTIFY)."""

    def __init__(self) -> None:
        self.depth = 0
        self.events: list[dict[str, Any]] = []
        self.statements: list[str] = []
        self.rolled_back = 0

    def is_in_transaction(self) -> bool:
        return self.depth > 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.depth += 1
        committed = len(self.events)
        try:
            yield
        except BaseException:
            # A failed transaction leaves nothing behind, as PostgreSQL would.
            del self.events[committed:]
            self.rolled_back += 1
            raise
        finally:
            self.depth -= 1

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append(sql)
        if sql == INSERT_OUTBOX_EVENT_SQL:
            self.events.append(json.loads(args[3]))
        return "OK"


class FakePool:
    """``acquire()`` hands out the one fake connection; ``closed`` says whether anyone closed it."""

    def __init__(self) -> None:
        self.conn = FakeConnection()
        self.acquired = 0
        self.closed = False

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        self.acquired += 1
        yield self.conn

    async def close(self) -> None:
        self.closed = True


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.published: list[tuple[str, str]] = []
        self.closed = False

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str, ex: int | None = None) -> bool:
        self.data[key] = value
        return True

    async def delete(self, *keys: str) -> int:
        return sum(self.data.pop(key, None) is not None for key in keys)

    async def exists(self, *keys: str) -> int:
        return sum(key in self.data for key in keys)

    async def publish(self, channel: str, message: str) -> int:
        self.published.append((channel, message))
        return 0

    async def ping(self) -> bool:
        return True

    def register_script(self, script: str) -> object:
        async def run(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("scripts need a real Redis: an integration test")

        return run

    async def aclose(self) -> None:
        self.closed = True


def install(monkeypatch: pytest.MonkeyPatch, module: ModuleType, fake: object) -> None:
    """Replace each function of ``module`` that ``fake`` defines by the fake's method."""
    for name in dir(fake):
        if not name.startswith("_") and callable(getattr(fake, name)) and hasattr(module, name):
            monkeypatch.setattr(module, name, getattr(fake, name))


# --- order_api -------------------------------------------------------------------------------


@dataclass
class FakeOrderRepository:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(
        self, *, user_id: str, status: str = "PENDING", total: str = "39.98", currency: str = "EUR"
    ) -> str:
        order_id = str(uuid.uuid4())
        self.orders[order_id] = {
            "id": order_id,
            "user_id": user_id,
            "status": status,
            "currency": currency,
            "total": Decimal(total),
            "contact": json.dumps({"id": user_id, "email": "ada@example.com", "name": "Ada"}),
            "created_at": NOW,
            "updated_at": NOW,
        }
        self.items[order_id] = [
            {
                "order_id": order_id,
                "sku": "SKU-1",
                "name": "Item",
                "quantity": 2,
                "unit_price": Decimal(total) / 2,
                "line_total": Decimal(total),
            }
        ]
        return order_id

    async def create_order(self, db: Any, order: Any, key: Any) -> bool:
        """As CREATE_ORDER_SQL: nothing is written when a live entry already holds the key."""
        if key is not None and (order.user_id, key.key) in self.keys:
            return False
        self.orders[order.order_id] = {
            "id": order.order_id,
            "user_id": order.user_id,
            "status": "PENDING",
            "currency": order.currency,
            "total": order.total,
            "contact": order.contact_json,
            "created_at": order.created_at,
            "updated_at": order.created_at,
        }
        self.items[order.order_id] = [
            dict(
                zip(("sku", "name", "quantity", "unit_price", "line_total"), item, strict=True),
                order_id=order.order_id,
            )
            for item in order.items
        ]
        self.events.append(order.event)
        if key is not None:
            self.keys[(order.user_id, key.key)] = {
                "request_hash": key.request_hash,
                "response_body": key.response_body,
                "order_id": order.order_id,
            }
        return True

    async def get_idempotency_key(
        self, db: Any, user_id: str, key: str, *, ttl_s: float
    ) -> dict[str, Any] | None:
        return self.keys.get((user_id, key))

    async def get_order(self, db: Any, order_id: str) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    async def get_order_detail(self, db: Any, order_id: str) -> Any:
        from order_api.repository import OrderDetail

        order = self.orders.get(order_id)
        if order is None:
            return None
        history = [h for h in self.history if h["order_id"] == order_id]
        return OrderDetail(order=cast(Any, order), items=self.items.get(order_id, []), history=history)

    async def lock_order(self, conn: Any, order_id: str) -> dict[str, Any] | None:
        if not conn.is_in_transaction():
            raise RuntimeError("a row lock outside a transaction is released at once")
        return self.orders.get(order_id)

    async def change_status(
        self,
        conn: Any,
        order_id: str,
        *,
        from_status: str,
        to_status: str,
        changed_by: str,
        reason: str | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = dict(self.orders[order_id], status=str(to_status))
        self.orders[order_id] = row
        await self.insert_history(
            conn, order_id, from_status=from_status, to_status=to_status, changed_by=changed_by, reason=reason
        )
        return row, self.items.get(order_id, [])

    async def decide_pending(self, db: Any, decision: Any) -> bool:
        """As DECIDE_PENDING_SQL: the status, its history entry and its event, if still PENDING
        with the total and currency decided on."""
        order = self.orders.get(decision.order_id)
        if order is None or order["status"] != "PENDING":
            return False
        if (order["total"], order["currency"]) != (decision.total, decision.currency):
            return False
        changed = {"status": decision.to_status, "updated_at": decision.updated_at}
        self.orders[decision.order_id] = {**order, **changed}
        await self.insert_history(
            db,
            decision.order_id,
            from_status="PENDING",
            to_status=decision.to_status,
            changed_by=decision.changed_by,
            reason=decision.reason,
        )
        self.events.append(json.loads(decision.event_json))
        return True

    async def get_items(self, db: Any, order_ids: Sequence[str]) -> list[dict[str, Any]]:
        return [item for order_id in order_ids for item in self.items.get(order_id, [])]

    async def insert_history(
        self,
        conn: Any,
        order_id: str,
        *,
        from_status: str | None,
        to_status: str,
        changed_by: str,
        reason: str | None,
    ) -> None:
        self.history.append(
            {
                "order_id": order_id,
                "from_status": str(from_status) if from_status else None,
                "to_status": str(to_status),
                "changed_by": changed_by,
                "reason": reason,
            }
        )


# --- user_api --------------------------------------------------------------------------------


@dataclass
class FakeUserRepository:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, *, role: str = "user", password_hash: str = "", email: str | None = None) -> str:
        user_id = str(uuid.uuid4())
        self.users[user_id] = {
            "id": user_id,
            "email": email or f"{user_id[:8]}@example.com",
            "name": "Ada Lovelace",
            "phone": None,
            "role": role,
            "notify_email": True,
            "notify_sms": False,
            "notify_push": False,
            "push_token": None,
            "password_hash": password_hash,
            "created_at": NOW,
            "updated_at": NOW,
        }
        return user_id

    async def insert_user(self, db: Any, *, email: str, password_hash: str, **fields: Any) -> dict[str, Any]:
        if any(u["email"] == email for u in self.users.values()):
            raise asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
        user_id = self.add(role=fields["role"], password_hash=password_hash, email=email)
        self.users[user_id].update(fields)
        return self.users[user_id]

    async def get_user(self, db: Any, user_id: str) -> dict[str, Any] | None:
        return self.users.get(user_id)

    async def get_user_by_email(self, db: Any, email: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if u["email"] == email), None)

    async def update_user(self, db: Any, user_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        if user_id not in self.users:
            return None
        self.users[user_id] = {**self.users[user_id], **changes}
        return self.users[user_id]

    async def soft_delete_user(self, db: Any, user_id: str) -> bool:
        return self.users.pop(user_id, None) is not None


class FakeTokens:
    """user_api.tokens.TokenService as far as the profile rules use it."""

    access_ttl_s = 900

    def __init__(self) -> None:
        self.revoked_all: list[str] = []

    async def revoke_all_sessions(self, user_id: str) -> int:
        self.revoked_all.append(user_id)
        return 1


# --- notifier --------------------------------------------------------------------------------


@dataclass
class FakeNotificationRepository:
    """Claim, lease and finish as ``notifier.repository`` does them, kept in a dict."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    lease_left_s: float | None = 30.0

    def add(
        self, *, channel: str = "email", status: str = "queued", template: str = "user.registered"
    ) -> str:
        notification_id = str(uuid.uuid4())
        self.rows[notification_id] = {
            "id": notification_id,
            "channel": channel,
            "status": status,
            "template": template,
            "recipient": {"email": "ada@example.com", "sms": "+447700900123", "push": "tok-123456789"}[
                channel
            ],
            "attempts": 0,
            "trace_id": None,
            "held_fingerprint": None,
            "context": json.dumps(
                {
                    "user": {"id": str(uuid.uuid4()), "name": "Ada", "email": "ada@example.com"},
                    "event": {"id": str(uuid.uuid4()), "type": template, "occurred_at": NOW.isoformat()},
                }
            ),
        }
        return notification_id

    async def get_notification(self, db: Any, notification_id: str) -> dict[str, Any] | None:
        return self.rows.get(notification_id)

    async def claim(
        self,
        conn: Any,
        notification_id: str,
        *,
        lease_s: float,
        revive_dead: bool,
        templates_fingerprint: str | None = None,
    ) -> dict[str, Any] | None:
        row = self.rows.get(notification_id)
        if row is None:
            return None
        claimable = row["status"] == "queued" or (revive_dead and row["status"] == "dead")
        if row["status"] == "held" and row["held_fingerprint"] != templates_fingerprint:
            claimable = True
        if not claimable:
            return None
        row.update(status="sending", attempts=row["attempts"] + 1)
        return dict(row)

    async def finish_attempt(
        self,
        conn: Any,
        row: dict[str, Any],
        *,
        outcome: str,
        error: str | None = None,
        provider_message_id: str | None = None,
        held_fingerprint: str | None = None,
    ) -> bool:
        self.attempts.append({"id": row["id"], "outcome": outcome, "error": error})
        status = {"sent": "sent", "permanent_error": "failed", "transient_error": "queued", "held": "held"}
        self.rows[row["id"]].update(status=status[outcome], held_fingerprint=held_fingerprint)
        return True

    async def lease_remaining_s(self, db: Any, notification_id: str) -> float | None:
        return self.lease_left_s
