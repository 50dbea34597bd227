"""Well-behaved clients placing orders through the gateway while faults are injected.

Each order has its own ``Idempotency-Key``; an attempt that gets no answer (status 0), 409 (the
same key is being processed), 429, 502, 503 or 504 is retried with the same key and body after
``Retry-After`` (or a jittered backoff) until the order is accepted or its retry budget (60 s) is
spent. Every attempt's outcome is kept with its time, so the runner can split them by fault.

The clients may be paced (``rate_per_s``: new orders a second, all clients together) below what
the workers deliver, so a backlog built up during a fault can drain after it; unpaced, four
clients outrun email delivery and the queues only grow.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RETRYABLE = frozenset({0, 409, 429, 502, 503, 504})
PASSWORD = "chaos suite password"
# The first account's address contains this: the SMTP 550 fault refuses its mail only.
REJECTED_MARK = "chaos.reject"


@dataclass
class Account:
    email: str
    user_id: str = ""
    token: str = ""


@dataclass
class OrderAttempt:
    key: str
    started: float
    accepted_at: float | None = None
    order_id: str | None = None
    gave_up: bool = False
    statuses: list[int] = field(default_factory=list)
    email: str = ""
    # Its emails were refused on purpose (the SMTP 550 fault): only the order itself must hold.
    mail_exempt: bool = False


@dataclass
class LoadStats:
    orders: list[OrderAttempt] = field(default_factory=list)
    # (monotonic time, status) of every attempt; 0 = no HTTP answer (refused, reset, timeout)
    attempts: list[tuple[float, int]] = field(default_factory=list)
    unexpected: Counter[str] = field(default_factory=Counter)

    def statuses_between(self, start: float, end: float) -> Counter[int]:
        return Counter(status for at, status in self.attempts if start <= at < end)


def order_body(key: str) -> dict[str, Any]:
    # The key is in the item's name, so duplicates of one client intent can be counted in SQL.
    return {
        "currency": "EUR",
        "items": [{"sku": "CHAOS-1", "name": f"chaos {key}", "quantity": 1, "unit_price": "9.99"}],
    }


class LoadClient:
    def __init__(
        self,
        gateway_url: str,
        *,
        concurrency: int = 4,
        retry_budget_s: float = 60.0,
        request_timeout_s: float = 10.0,
        think_s: float = 0.0,
        rate_per_s: float = 0.0,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.concurrency = concurrency
        self.retry_budget_s = retry_budget_s
        self.request_timeout_s = request_timeout_s
        self.think_s = think_s
        # All clients together start at most this many new orders a second (0: back to back).
        # Retries of an order are not paced: a client that waits on its order holds no new one.
        self.rate_per_s = rate_per_s
        self._next_start = 0.0
        self.stats = LoadStats()
        self.accounts: list[Account] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
            connector=aiohttp.TCPConnector(limit=self.concurrency * 4),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use LoadClient as an async context manager"
        return self._session

    async def _call(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            async with self.session.request(method, self.gateway_url + path, **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = {}
                return response.status, body if isinstance(body, dict) else {}, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return 0, {}, {}

    async def _with_retries(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        deadline = time.monotonic() + self.retry_budget_s
        attempt = 0
        while True:
            status, body, headers = await self._call(method, path, **kwargs)
            if status not in RETRYABLE or time.monotonic() >= deadline:
                return status, body
            attempt += 1
            await asyncio.sleep(self._delay(attempt, headers, deadline))

    def _delay(self, attempt: int, headers: dict[str, str], deadline: float) -> float:
        retry_after = headers.get("Retry-After", "")
        delay = float(retry_after) if retry_after.isdigit() else min(2.0, 0.1 * 2**attempt)
        delay *= random.uniform(0.8, 1.2)
        return max(0.05, min(delay, deadline - time.monotonic()))

    async def register(self, count: int) -> None:
        """Create ``count`` throw-away accounts and log each in."""
        number = 0
        for _ in range(count * 3):
            if len(self.accounts) == count:
                return
            prefix = REJECTED_MARK if not self.accounts else "chaos"
            account = Account(f"{prefix}.{uuid.uuid4().hex[:12]}@example.com")
            status, body = await self._with_retries(
                "POST",
                "/api/auth/register",
                json={"email": account.email, "password": PASSWORD, "name": "Chaos"},
            )
            number += 1
            if status != 201:
                raise RuntimeError(f"registering {account.email}: {status} {body}")
            try:
                await self._login(account)
            except RuntimeError as exc:
                # Seen once on a shared machine; the run should not hinge on one account.
                self.stats.unexpected[f"login after register: {exc}"[:120]] += 1
                continue
            self.accounts.append(account)
        raise RuntimeError(f"could not register and log in {count} accounts in {number} tries")

    async def _login(self, account: Account) -> None:
        status, body = await self._with_retries(
            "POST", "/api/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        if status != 200:
            raise RuntimeError(f"logging in {account.email}: {status} {body}")
        account.token = body["access_token"]
        account.user_id = body["user"]["id"]

    async def place_order(self, account: Account) -> OrderAttempt:
        key = uuid.uuid4().hex
        order = OrderAttempt(key, time.monotonic(), email=account.email)
        self.stats.orders.append(order)
        deadline = order.started + self.retry_budget_s
        attempt = 0
        while True:
            headers = {"Authorization": f"Bearer {account.token}", "Idempotency-Key": key}
            status, body, response_headers = await self._call(
                "POST", "/api/orders", json=order_body(key), headers=headers
            )
            now = time.monotonic()
            order.statuses.append(status)
            self.stats.attempts.append((now, status))
            if status in (200, 201):
                order.accepted_at, order.order_id = now, str(body["id"])
                return order
            if status == 401:
                await self._login(account)  # the access token expired during a long run
                continue
            if status not in RETRYABLE:
                self.stats.unexpected[f"{status} {body.get('detail', '')}"[:120]] += 1
                order.gave_up = True
                return order
            if now >= deadline:
                order.gave_up = True
                return order
            attempt += 1
            await asyncio.sleep(self._delay(attempt, response_headers, deadline))

    async def _paced(self) -> None:
        """Wait for the next start slot; slots missed while every client was busy are dropped."""
        if self.rate_per_s <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._next_start)
        self._next_start = slot + 1.0 / self.rate_per_s
        await asyncio.sleep(slot - now)

    async def run(self, stop: asyncio.Event) -> None:
        """Place orders on every account until ``stop`` (paced, if a rate is set); in-flight
        orders finish."""

        async def client(account: Account) -> None:
            while not stop.is_set():
                await self._paced()
                if stop.is_set():
                    break
                await self.place_order(account)
                if self.think_s:
                    await asyncio.sleep(self.think_s)

        await asyncio.gather(*(client(account) for account in self.accounts))
