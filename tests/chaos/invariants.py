"""The invariants the fault suite checks after the load, read from the database and the mailbox.

For the orders the clients placed (their ``Idempotency-Key`` is in the item name):

- lost: accepted (the client saw 2xx) but not CONFIRMED with its two emails (received and
  confirmed) once the system has had time to recover;
- duplicate orders: more than one order for one key;
- duplicate emails: more than one email with the same subject for one order;
- stuck: any order of the run still PENDING after the recovery wait, accepted or not;
- HTTP 500 and clients that spent their retry budget are counted by the load client.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

import asyncpg

from tests.chaos.load import OrderAttempt

RECEIVED = re.compile(r"^We received your order ([0-9a-f-]{36})$")
CONFIRMED = re.compile(r"^Your order ([0-9a-f-]{36}) is now confirmed$")

ORDERS_OF_RUN_SQL = """
    SELECT o.id::text AS id, o.status, substr(i.name, 7) AS key
    FROM orders o JOIN order_items i ON i.order_id = o.id
    WHERE i.sku = 'CHAOS-1' AND i.name = ANY($1::text[])
"""


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)  # keys
    duplicate_orders: list[str] = field(default_factory=list)  # keys
    duplicate_emails: list[str] = field(default_factory=list)  # order ids
    stuck: list[str] = field(default_factory=list)  # order ids

    def counts(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "duplicate_orders": len(self.duplicate_orders),
            "duplicate_emails": len(self.duplicate_emails),
            "stuck": len(self.stuck),
        }


class MailIndex:
    """Subjects of the messages in the SMTP sink's Maildir, read incrementally (headers only).

    The sink's HTTP listing parses every message on every call, which takes minutes for the
    thousands of emails of a run; a Maildir file never changes once delivered, so each is read once.
    """

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self._seen: dict[str, str] = {}

    def subjects(self) -> Counter[str]:
        parser = BytesHeaderParser(policy=email.policy.default)
        for folder in ("new", "cur"):
            directory = self.maildir / folder
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                key = path.name.split(":", 1)[0]  # the flags suffix may change, the key does not
                if key in self._seen:
                    continue
                try:
                    with path.open("rb") as handle:
                        headers = parser.parse(handle)
                except OSError:
                    continue  # moved from new/ to cur/ meanwhile: found on the next pass
                self._seen[key] = str(headers.get("Subject", ""))
        return Counter(self._seen.values())


def mails_per_order(subjects: Counter[str]) -> tuple[Counter[str], Counter[str]]:
    received: Counter[str] = Counter()
    confirmed: Counter[str] = Counter()
    for subject, count in subjects.items():
        if match := RECEIVED.match(subject):
            received[match.group(1)] += count
        elif match := CONFIRMED.match(subject):
            confirmed[match.group(1)] += count
    return received, confirmed


def judge(
    orders: Iterable[OrderAttempt],
    rows: Iterable[asyncpg.Record | dict[str, str]],
    received: Counter[str],
    confirmed: Counter[str],
) -> Verdict:
    verdict = Verdict()
    by_key: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_key.setdefault(str(row["key"]), []).append((str(row["id"]), str(row["status"])))
    for key, found in by_key.items():
        if len(found) > 1:
            verdict.duplicate_orders.append(key)
        for order_id, status in found:
            if status == "PENDING":
                verdict.stuck.append(order_id)
            if received[order_id] > 1 or confirmed[order_id] > 1:
                verdict.duplicate_emails.append(order_id)
    for order in orders:
        if order.order_id is None:
            continue
        found = by_key.get(order.key, [])
        complete = any(
            order_id == order.order_id
            and status == "CONFIRMED"
            and (order.mail_exempt or (received[order_id] and confirmed[order_id]))
            for order_id, status in found
        )
        if not complete:
            verdict.lost.append(order.key)
    return verdict


async def check(
    orders: list[OrderAttempt],
    *,
    orders_dsn: str,
    mail: MailIndex,
    wait_s: float,
) -> tuple[Verdict, float]:
    """Wait up to ``wait_s`` for every accepted order to complete; the verdict and the wait."""
    names = [f"chaos {order.key}" for order in orders]
    started = time.monotonic()
    conn = await asyncpg.connect(orders_dsn)
    try:
        while True:
            rows = await conn.fetch(ORDERS_OF_RUN_SQL, names)
            received, confirmed = mails_per_order(await asyncio.to_thread(mail.subjects))
            verdict = judge(orders, rows, received, confirmed)
            waited = time.monotonic() - started
            if (not verdict.lost and not verdict.stuck) or waited >= wait_s:
                return verdict, waited
            await asyncio.sleep(2)
    finally:
        await conn.close()
