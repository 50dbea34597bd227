"""Fixtures of the integration layer: a migrated database per service for the session, and a
rolled-back transaction per test on it (tests/integration/db.py), handed to ``create_app(pool=)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from notifier.deps import MIGRATIONS as NOTIFIER_MIGRATIONS
from order_api.deps import MIGRATIONS as ORDER_MIGRATIONS
from tests.conftest import pg_dsn
from tests.integration.db import RolledBackPool, migrate_in_thread, rolled_back
from user_api.deps import MIGRATIONS as USER_MIGRATIONS


@pytest.fixture(scope="session")
def orders_migrated_db(database_factory: Callable[[str], str]) -> str:
    name = database_factory("orders_tx")
    migrate_in_thread(pg_dsn(name), ORDER_MIGRATIONS)
    return name


@pytest.fixture(scope="session")
def users_migrated_db(database_factory: Callable[[str], str]) -> str:
    name = database_factory("users_tx")
    migrate_in_thread(pg_dsn(name), USER_MIGRATIONS)
    return name


@pytest.fixture(scope="session")
def notifications_migrated_db(database_factory: Callable[[str], str]) -> str:
    name = database_factory("notifications_tx")
    migrate_in_thread(pg_dsn(name), NOTIFIER_MIGRATIONS)
    return name


@pytest.fixture
async def orders_tx(orders_migrated_db: str) -> AsyncIterator[RolledBackPool]:
    async with rolled_back(pg_dsn(orders_migrated_db)) as pool:
        yield pool


@pytest.fixture
async def users_tx(users_migrated_db: str) -> AsyncIterator[RolledBackPool]:
    async with rolled_back(pg_dsn(users_migrated_db)) as pool:
        yield pool


@pytest.fixture
async def notifications_tx(notifications_migrated_db: str) -> AsyncIterator[RolledBackPool]:
    async with rolled_back(pg_dsn(notifications_migrated_db)) as pool:
        yield pool
