"""The running stack as the benchmark sees it: a bench user at the gateway, and probes that say
when an order is fully processed (201, CONFIRMED, both e-mails accepted by SMTP) and how much
work is still waiting (outbox rows, queued notifications, RabbitMQ queues)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from common.events import ORDER_CREATED, ORDER_STATUS_CHANGED
from common.settings import DatabaseSettings, RabbitSettings, load_settings

ORDER_BODY = (
    '{"currency":"EUR","items":[{"sku":"BENCH-1","name":"Bench item","quantity":1,"unit_price":"9.99"}]}'
)
PASSWORD = "bench password 1234"  # noqa: S105 - a throw-away user of the run

PROCESSED_SQL = f"""
    SELECT count(*) FILTER (WHERE event_type = '{ORDER_CREATED}' AND status = 'sent') AS created_sent,
           count(*) FILTER (WHERE event_type = '{ORDER_STATUS_CHANGED}' AND status = 'sent') AS changed_sent,
           count(*) FILTER (WHERE status IN ('failed', 'dead')) AS failed
    FROM notifications WHERE user_id = $1 AND channel = 'email'
"""  # noqa: S608 - constants only
ORDERS_SQL = """
    SELECT count(*) AS total, count(*) FILTER (WHERE status = 'CONFIRMED') AS confirmed
    FROM orders WHERE user_id = $1
"""
OUTBOX_PENDING_SQL = "SELECT count(*) FROM outbox_events WHERE published_at IS NULL"
NOTIFICATIONS_WAITING_SQL = "SELECT count(*) FROM notifications WHERE status IN ('queued', 'sending')"
BACKENDS_SQL = "SELECT pid, datname FROM pg_stat_activity WHERE datname IS NOT NULL"


class BenchSettings(DatabaseSettings, RabbitSettings):
    user_db_name: str = "users"
    order_db_name: str = "orders"
    notification_db_name: str = "notifications"
    rabbitmq_management_url: str = "http://127.0.0.1:15672"


@dataclass
class BenchUser:
    id: str
    email: str
    token: str


@dataclass
class Progress:
    accepted: int
    confirmed: int
    created_sent: int
    changed_sent: int
    failed: int

    @property
    def fully_processed(self) -> int:
        return min(self.confirmed, self.created_sent, self.changed_sent)

    @property
    def done(self) -> bool:
        return self.accepted > 0 and self.fully_processed >= self.accepted


@dataclass
class Stack:
    gateway_url: str
    settings: BenchSettings
    http: aiohttp.ClientSession
    users_db: asyncpg.Connection
    orders_db: asyncpg.Connection
    notifications_db: asyncpg.Connection
    admin_db: asyncpg.Connection
    own_backends: set[int] = field(default_factory=set)

    @classmethod
    async def open(cls, gateway_url: str) -> Stack:
        settings = load_settings(BenchSettings)
        connections = []
        databases = (settings.user_db_name, settings.order_db_name, settings.notification_db_name, "postgres")
        for database in databases:
            dsn = settings.dsn_for(database)
            connections.append(await asyncpg.connect(dsn, server_settings={"application_name": "bench"}))
        users, orders, notifications, admin = connections
        stack = cls(
            gateway_url.rstrip("/"), settings, aiohttp.ClientSession(), users, orders, notifications, admin
        )
        for conn in connections:
            stack.own_backends.add(conn.get_server_pid())
        return stack

    async def close(self) -> None:
        await self.http.close()
        for conn in (self.users_db, self.orders_db, self.notifications_db, self.admin_db):
            await conn.close()

    async def new_user(self, label: str) -> BenchUser:
        email = f"bench-{label}-{uuid.uuid4().hex[:8]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": f"Bench {label}"}
        async with self.http.post(f"{self.gateway_url}/api/auth/register", json=body) as response:
            registered: dict[str, Any] = await response.json()
            if response.status != 201:
                raise RuntimeError(f"register: {response.status} {registered}")
        for _ in range(30):  # the login limit is per address: a well-behaved client waits
            async with self.http.post(
                f"{self.gateway_url}/api/auth/login", json={"email": email, "password": PASSWORD}
            ) as response:
                if response.status == 429:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "2")))
                    continue
                tokens: dict[str, Any] = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"login: {response.status} {tokens}")
                return BenchUser(str(registered["id"]), email, str(tokens["access_token"]))
        raise RuntimeError("login: rate limited for a minute")

    async def place_order(self, user: BenchUser) -> str:
        headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "application/json"}
        async with self.http.post(
            f"{self.gateway_url}/api/orders", data=ORDER_BODY, headers=headers
        ) as response:
            order: dict[str, Any] = await response.json()
            if response.status != 201:
                raise RuntimeError(f"order: {response.status} {order}")
            return str(order["id"])

    async def progress(self, user: BenchUser) -> Progress:
        orders = await self.orders_db.fetchrow(ORDERS_SQL, uuid.UUID(user.id))
        mails = await self.notifications_db.fetchrow(PROCESSED_SQL, uuid.UUID(user.id))
        assert orders is not None
        assert mails is not None
        return Progress(
            orders["total"],
            orders["confirmed"],
            mails["created_sent"],
            mails["changed_sent"],
            mails["failed"],
        )

    async def queue_depths(self) -> dict[str, int]:
        auth = aiohttp.BasicAuth(self.settings.rabbitmq_username, self.settings.rabbitmq_password)
        vhost = self.settings.rabbitmq_vhost.replace("/", "%2F")
        url = f"{self.settings.rabbitmq_management_url}/api/queues/{vhost}?columns=name,messages"
        try:
            async with self.http.get(url, auth=auth, timeout=aiohttp.ClientTimeout(total=5)) as response:
                queues: list[dict[str, Any]] = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return {}
        return {q["name"]: int(q.get("messages") or 0) for q in queues if not q["name"].endswith(".XQ")}

    async def backlog(self, *, with_queues: bool) -> dict[str, int]:
        waiting = {
            "outbox_orders": int(await self.orders_db.fetchval(OUTBOX_PENDING_SQL)),
            "outbox_users": int(await self.users_db.fetchval(OUTBOX_PENDING_SQL)),
            "notifications_waiting": int(await self.notifications_db.fetchval(NOTIFICATIONS_WAITING_SQL)),
        }
        if with_queues:
            waiting["queued_messages"] = sum((await self.queue_depths()).values())
        return waiting

    async def backends(self) -> dict[int, str]:
        rows = await self.admin_db.fetch(BACKENDS_SQL)
        return {row["pid"]: row["datname"] for row in rows if row["pid"] not in self.own_backends}

    async def wait_processed(
        self, user: BenchUser, *, timeout_s: float
    ) -> tuple[Progress, float, dict[str, int]]:
        """Poll until every accepted order of ``user`` is fully processed; returns the drain time."""
        start = time.monotonic()
        peak: dict[str, int] = {}
        while True:
            progress = await self.progress(user)
            backlog = await self.backlog(with_queues=True)
            for name, value in backlog.items():
                peak[name] = max(peak.get(name, 0), value)
            if progress.done or time.monotonic() - start > timeout_s:
                return progress, time.monotonic() - start, peak
            await asyncio.sleep(0.5)
