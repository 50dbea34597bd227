"""The rules of order_api: placing orders, who may see and change them, the status lifecycle.

No aiohttp here; handlers translate HTTP into these calls and domain errors back into HTTP.
Every change and its outbox event are written in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

import asyncpg
import structlog

from common.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from common.events import ORDER_CREATED, new_event
from common.jwt import Caller
from common.logging import current_trace_id
from common.outbox import OUTBOX_CHANNEL
from order_api import repository
from order_api.lifecycle import PRODUCER, apply_transition, count_transition, order_out
from order_api.schemas import (
    CENT,
    Contact,
    HistoryEntryOut,
    ItemOut,
    OrderDetailOut,
    OrderIn,
    OrderListQuery,
    OrderOut,
    OrderStatus,
    StatusChangeIn,
)
from order_api.settings import Settings

log = structlog.get_logger(__name__)
S = OrderStatus

# An owner may only cancel (and only before shipping, which TRANSITIONS enforces); CONFIRMED,
# SHIPPED and DELIVERED are admin transitions; REJECTED is set by processing alone.
OWNER_TARGETS = frozenset({S.CANCELLED})
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class Users(Protocol):
    """The contact look-up the rules need; ``order_api/users_client.py`` answers it over HTTP
    (injected, so these rules import no HTTP client and a unit test hands in a dict)."""

    async def fetch_contact(self, user_id: str, bearer_token: str) -> Contact | None: ...


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    users: Users
    settings: Settings


@dataclass(frozen=True)
class Placed:
    """A placed order as its JSON (kept verbatim under an Idempotency-Key, so a replay returns the
    same bytes) and whether it is a replay of an earlier request rather than a new order."""

    body: str
    order_id: str
    replayed: bool


def caller_uuid(caller: Caller) -> str:
    try:
        return str(uuid.UUID(caller.user_id))
    except ValueError:
        raise Unauthenticated("the access token does not name a user") from None


def _order_uuid(order_id: str) -> str:
    try:
        return str(uuid.UUID(order_id))
    except ValueError:
        raise NotFound("no such order") from None


def _visible_to(caller: Caller, row: asyncpg.Record) -> bool:
    return caller.is_admin or row["user_id"] == caller_uuid(caller)


def request_hash(body: OrderIn) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise InvalidInput(
            "the Idempotency-Key header is not valid",
            errors=[{"field": "Idempotency-Key", "message": "1 to 255 visible ASCII characters"}],
        )
    return key


def _replay(stored: asyncpg.Record, body_hash: str) -> Placed:
    if stored["request_hash"] != body_hash:
        raise InvalidInput(
            "this Idempotency-Key was already used with a different request",
            errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return Placed(stored["response_body"], stored["order_id"], replayed=True)


async def place_order(deps: Deps, caller: Caller, body: OrderIn, *, idempotency_key: str | None) -> Placed:
    user_id = caller_uuid(caller)
    ttl_s = deps.settings.idempotency_key_ttl_s
    body_hash = request_hash(body)
    if idempotency_key is not None:
        key = check_idempotency_key(idempotency_key)
        stored = await repository.get_idempotency_key(deps.pool, user_id, key, ttl_s=ttl_s)
        if stored is not None:
            # Answered from the record alone: a replay works even while user_api is down.
            return _replay(stored, body_hash)

    # Outside the transaction: no database connection is held while we wait on HTTP.
    contact = await deps.users.fetch_contact(user_id, caller.token)
    if contact is None:
        raise InvalidInput(
            "this account cannot place orders: the user service does not know it",
            errors=[{"field": "user", "message": "unknown or deleted user"}],
        )

    lines = [
        (
            item.sku,
            item.name,
            item.quantity,
            item.unit_price,
            (item.unit_price * item.quantity).quantize(CENT),
        )
        for item in body.items
    ]
    total = sum((line[4] for line in lines), Decimal("0.00"))
    contact_data = contact.model_dump(mode="json")
    # The id and the timestamp are chosen here rather than by the database so the response and
    # the event are known before the single statement that writes them (no read-back). The
    # event's occurred_at is this clock already.
    now = datetime.now(UTC)
    order = OrderOut(
        id=str(uuid.uuid4()),
        user_id=user_id,
        status=S.PENDING,
        currency=body.currency,
        items=[
            ItemOut(sku=sku, name=name, quantity=quantity, unit_price=unit_price, line_total=line_total)
            for sku, name, quantity, unit_price, line_total in lines
        ],
        total=total,
        created_at=now,
        updated_at=now,
    )
    event = new_event(
        ORDER_CREATED,
        {"order": order.model_dump(mode="json"), "user": contact_data},
        producer=PRODUCER,
        trace_id=current_trace_id(),
    )
    response_body = order.model_dump_json()
    created = await repository.create_order(
        deps.pool,
        repository.NewOrder(
            order_id=order.id,
            user_id=user_id,
            currency=body.currency,
            total=total,
            contact_json=json.dumps(contact_data),
            created_at=now,
            items=lines,
            reason="order placed",
            event=event,
            event_json=json.dumps(event, default=str),
            channel=OUTBOX_CHANNEL,
        ),
        None
        if idempotency_key is None
        else repository.NewKey(idempotency_key, body_hash, response_body, ttl_s),
    )
    if not created:
        # A concurrent request with the same key committed first: answer with its order.
        assert idempotency_key is not None
        stored = await repository.get_idempotency_key(deps.pool, user_id, idempotency_key, ttl_s=ttl_s)
        if stored is None:  # the winner's entry expired in between: vanishingly rare
            raise Conflict("a request with this Idempotency-Key was just processed; retry")
        return _replay(stored, body_hash)
    # Debug, not info: request_finished already logs the request (with its trace id), and the
    # order's history and event record the order; a log write per order is a syscall per order.
    log.debug("order_placed", **{"order.id": order.id, "order.total": str(total), "user.id": user_id})
    return Placed(response_body, order.id, replayed=False)


async def change_status(deps: Deps, caller: Caller, order_id: str, body: StatusChangeIn) -> OrderOut:
    target = OrderStatus(body.status)
    order_uuid = _order_uuid(order_id)
    async with deps.pool.acquire() as conn, conn.transaction():
        row = await repository.lock_order(conn, order_uuid)
        # Someone else's order is indistinguishable from a missing one.
        if row is None or not _visible_to(caller, row):
            raise NotFound("no such order")
        if not caller.is_admin and target not in OWNER_TARGETS:
            raise Forbidden(f"only an admin may set an order to {target}")
        current = OrderStatus(row["status"])
        order = await apply_transition(conn, row, target, changed_by=caller_uuid(caller), reason=body.reason)
    count_transition(current, target)
    return order


async def cancel_order(deps: Deps, caller: Caller, order_id: str) -> OrderOut:
    return await change_status(deps, caller, order_id, StatusChangeIn(status="CANCELLED", reason=None))


async def get_order(deps: Deps, caller: Caller, order_id: str) -> OrderDetailOut:
    detail = await repository.get_order_detail(deps.pool, _order_uuid(order_id))
    if detail is None or not _visible_to(caller, detail.order):
        raise NotFound("no such order")
    order = order_out(detail.order, detail.items)
    history = [
        HistoryEntryOut(
            from_status=OrderStatus(h["from_status"]) if h["from_status"] else None,
            to_status=OrderStatus(h["to_status"]),
            changed_by=h["changed_by"],
            reason=h["reason"],
            changed_at=h["changed_at"],
        )
        for h in detail.history
    ]
    return OrderDetailOut(**dict(order), history=history)


async def list_orders(deps: Deps, caller: Caller, query: OrderListQuery) -> tuple[list[OrderOut], int]:
    rows, total = await repository.list_orders(
        deps.pool,
        user_id=None if caller.is_admin else caller_uuid(caller),
        status=query.status.value if query.status else None,
        limit=query.limit,
        offset=query.offset,
    )
    items_by_order: dict[str, list[asyncpg.Record]] = {row["id"]: [] for row in rows}
    for item in await repository.get_items(deps.pool, list(items_by_order)):
        items_by_order[item["order_id"]].append(item)
    return [order_out(row, items_by_order[row["id"]]) for row in rows], total


async def purge_expired_idempotency_keys(deps: Deps) -> int:
    return await repository.purge_idempotency_keys(deps.pool, ttl_s=deps.settings.idempotency_key_ttl_s)
