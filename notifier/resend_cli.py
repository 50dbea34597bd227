"""``python -m notifier resend``: the API's resend, for an operator at a shell.

    python -m notifier resend ID [ID ...]
    python -m notifier resend --status failed [--status dead] [--template T] [--channel C]
                              [--from 2026-11-25T19:00Z] [--to 2026-11-25T20:00Z] [--limit N] [--dry-run]

The same service functions as ``POST /api/notifications/{id}/resend`` and
``POST /api/notifications/resend``: same row, same Message-ID, next attempt. Exit codes: 0 done,
1 something was refused or could not be queued, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
from pydantic import ValidationError

from common.db import create_pool
from common.errors import AppError
from notifier import resend
from notifier.queue import DeliveryQueue
from notifier.schemas import MAX_BULK_RESEND, ResendMatching
from notifier.settings import CHANNELS, NotifierSettings


def _aware(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +01:00)")
    return value


def add_resend_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "resend",
        help="resend failed or dead notifications (by id, or all that match)",
        description="Resend failed or dead notifications: the given ids, or every one that matches.",
    )
    command.add_argument("ids", nargs="*", metavar="ID", help="notification ids")
    command.add_argument("--status", action="append", choices=("failed", "dead"), default=None)
    command.add_argument("--template", default=None, help="e.g. order.created")
    command.add_argument("--channel", choices=CHANNELS, default=None)
    command.add_argument("--from", dest="created_from", type=_aware, default=None, help="created at or after")
    command.add_argument("--to", dest="created_to", type=_aware, default=None, help="created before")
    command.add_argument("--limit", type=int, default=100, help=f"at most this many (max {MAX_BULK_RESEND})")
    command.add_argument("--dry-run", action="store_true", help="only list what would be resent")


def run_resend(settings: NotifierSettings, args: argparse.Namespace) -> int:
    filters = (args.status, args.template, args.channel, args.created_from, args.created_to)
    if args.ids and any(value is not None for value in filters):
        print("give ids or filters (--status …), not both", file=sys.stderr)
        return 2
    if not args.ids:
        try:
            query = ResendMatching(
                status=args.status or [],
                template=args.template,
                channel=args.channel,
                created_from=args.created_from,
                created_to=args.created_to,
                limit=args.limit,
                dry_run=args.dry_run,
            )
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"]) or "arguments"
                print(f"{where}: {error['msg']}", file=sys.stderr)
            return 2
        return asyncio.run(_resend_matching(settings, query))
    if args.dry_run:
        print("--dry-run lists matches of filters; with ids there is nothing to list", file=sys.stderr)
        return 2
    return asyncio.run(_resend_ids(settings, args.ids))


@contextlib.asynccontextmanager
async def _opened(settings: NotifierSettings) -> AsyncIterator[tuple[asyncpg.Pool, DeliveryQueue]]:
    """What both resends work with, as the API has it: the notifications pool and the queue."""
    pool = await create_pool(settings.dsn, min_size=1, max_size=2)
    queue = DeliveryQueue(settings.amqp_url)
    try:
        yield pool, queue
    finally:
        await queue.close()
        await pool.close()


async def _resend_ids(settings: NotifierSettings, ids: list[str]) -> int:
    refused = 0
    async with _opened(settings) as (pool, queue):
        for notification_id in ids:
            try:
                notification = await resend.resend(pool, queue, notification_id, resent_by=None)
            except AppError as exc:
                refused += 1
                print(f"refused {notification_id}: {exc.detail}", file=sys.stderr)
            else:
                print(f"resent {notification.id} (resend {notification.resends})")
    return 1 if refused else 0


async def _resend_matching(settings: NotifierSettings, query: ResendMatching) -> int:
    async with _opened(settings) as (pool, queue):
        try:
            result = await resend.resend_matching(pool, queue, query, resent_by=None)
        except AppError as exc:
            print(f"refused: {exc.detail}", file=sys.stderr)
            return 1
    for notification_id in result.ids:
        print(f"{'would resend' if result.dry_run else 'resent'} {notification_id}")
    print(f"{result.count} notification(s) {'match' if result.dry_run else 'resent'}")
    return 0
