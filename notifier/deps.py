"""What the notifier's rules work with, built one way for the API, its CLI and the workers."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg

from notifier.channels.email import EmailSender
from notifier.channels.push import PushSender
from notifier.channels.sms import SmsSender
from notifier.delivery import DeliveryDeps
from notifier.queue import DeliveryQueue
from notifier.service import Deps
from notifier.settings import DeliverySettings, NotifierSettings
from notifier.templates import TemplateRenderer
from notifier.users import UserDirectory

# The API and the workers both apply these; the advisory lock makes concurrent runs safe.
MIGRATIONS = [("notifier", Path(__file__).parent / "sql")]


def build_deps(
    settings: NotifierSettings,
    pool: asyncpg.Pool,
    renderer: TemplateRenderer,
    queue: DeliveryQueue,
    session: aiohttp.ClientSession,
) -> Deps:
    users = UserDirectory(session, settings.user_service_url, timeout_s=settings.user_service_timeout_s)
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
