"""What the notifier's rules work with, built one way for the API, its CLI and the workers.

No aiohttp import here (the workers build their delivery deps from this module): the HTTP
session is handed in, and only the SMS and push adapters use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from notifier.channels.email import EmailSender
from notifier.channels.push import PushSender
from notifier.channels.sms import SmsSender
from notifier.delivery import DeliveryDeps
from notifier.queue import DeliveryQueue
from notifier.service import Deps, Users
from notifier.settings import DeliverySettings
from notifier.templates import TemplateRenderer

if TYPE_CHECKING:
    import aiohttp

# The API and the workers both apply these; the advisory lock makes concurrent runs safe.
MIGRATIONS = [("notifier", Path(__file__).parent / "sql")]


def build_deps(pool: asyncpg.Pool, renderer: TemplateRenderer, queue: DeliveryQueue, users: Users) -> Deps:
    return Deps(pool, renderer, queue, users)


def build_delivery_deps(
    settings: DeliverySettings, pool: asyncpg.Pool, renderer: TemplateRenderer, http: aiohttp.ClientSession
) -> DeliveryDeps:
    return DeliveryDeps(
        pool=pool,
        renderer=renderer,
        senders={
            "email": EmailSender(settings),
            "sms": SmsSender(http, settings),
            "push": PushSender(http, settings),
        },
        lease_s=settings.delivery_lease_s,
    )
