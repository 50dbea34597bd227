"""Fixtures for the notification tests: a migrated notifications database, a scripted SMTP
server (aiosmtpd), the fake SMS/push provider, and a copy of the templates a test may edit."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from common.db import create_pool
from common.migrations import migrate_dsn
from notifier.app import MIGRATIONS
from notifier.channels.email import EmailSender
from notifier.channels.push import PushSender
from notifier.channels.sms import SmsSender
from notifier.delivery import DeliveryDeps
from notifier.fake_provider import STATE, ProviderState
from notifier.fake_provider import create_app as create_fake_provider
from notifier.settings import DeliverySettings
from notifier.templates import TemplateRenderer
from tests.conftest import pg_dsn
from tests.integration.notifier.helpers import SmtpServer, start_smtp_server

REPO_TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
PROVIDER_TOKEN = "test-provider-token"


@pytest.fixture(scope="session")
def notifications_db(database_factory: Callable[[str], str]) -> str:
    name = database_factory("notifications")
    asyncio.run(migrate_dsn(pg_dsn(name), MIGRATIONS))
    return name


@pytest.fixture
async def pool(notifications_db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn(notifications_db), min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, folder)
    return folder


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_smtp_server()
    yield server
    server.handler.release.set()
    server.controller.stop()


class FakeProvider:
    """The fake provider served on a real port, plus direct access to what it recorded."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.url = str(server.make_url("")).rstrip("/")

    @property
    def state(self) -> ProviderState:
        return self.server.app[STATE]

    def received(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.state.received if m["channel"] == channel]

    async def fail(self, channel: str, **mode: Any) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.put(f"{self.url}/_fake/failures/{channel}", json=mode) as response,
        ):
            assert response.status == 200, await response.text()

    async def recover(self) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.delete(f"{self.url}/_fake/failures") as response,
        ):
            assert response.status == 204


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    server = TestServer(create_fake_provider(token=PROVIDER_TOKEN), host="127.0.0.1")
    await server.start_server()
    yield FakeProvider(server)
    await server.close()


def delivery_settings(smtp: SmtpServer, provider_url: str, **overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_timeout_s": 5.0,
        "mail_from": "Shop <no-reply@shop.test>",
        "sms_provider_url": provider_url,
        "sms_provider_token": PROVIDER_TOKEN,
        "push_provider_url": provider_url,
        "push_provider_token": PROVIDER_TOKEN,
        "provider_timeout_s": 2.0,
        "delivery_lease_s": 10.0,
        **overrides,
    }
    return DeliverySettings(**values)


@pytest.fixture
async def deps(
    pool: asyncpg.Pool, templates_dir: Path, smtp: SmtpServer, provider: FakeProvider
) -> AsyncIterator[DeliveryDeps]:
    settings = delivery_settings(smtp, provider.url)
    async with aiohttp.ClientSession() as session:
        yield DeliveryDeps(
            pool=pool,
            renderer=TemplateRenderer(templates_dir),
            senders={
                "email": EmailSender(settings),
                "sms": SmsSender(session, settings),
                "push": PushSender(session, settings),
            },
            lease_s=settings.delivery_lease_s,
        )
