"""create_app's seams: what is handed in is used, and never opened or closed by the app.

The apps are started with ``AppRunner.setup()`` (cleanup contexts run, no port is bound), so a
context that still opened its own pool or client would hit the refused socket and fail here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from common.auth import TOKEN_VERIFIER
from common.contexts import PG_POOL, REDIS
from common.errors import Unauthenticated
from common.health import HEALTH_CHECKS
from common.revocation import revoked_jti_key
from common.settings import JwtSettings
from order_api import repository as order_repository
from order_api.app import create_app as create_order_app
from order_api.settings import Settings as OrderSettings
from order_api.state import DEPS as ORDER_DEPS
from tests.unit.fakes import FakePool, FakeRedis
from tests.unit.test_token_verifier import mint
from user_api.app import create_app as create_user_app
from user_api.settings import Settings as UserSettings
from user_api.state import DEPS as USER_DEPS


async def started(app: web.Application) -> AsyncIterator[web.Application]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app
    finally:
        await runner.cleanup()


async def test_user_api_runs_on_the_pool_and_redis_it_is_given(
    jwt_files: dict[str, Path], pool: FakePool, redis: FakeRedis
) -> None:
    settings = UserSettings(app_env="test", bcrypt_rounds=4, outbox_relay_enabled=False, **jwt_files)
    app = create_user_app(settings, pool=cast(Any, pool), redis=cast(Any, redis))
    async for running in started(app):
        deps = running[USER_DEPS]
        assert deps.pool is pool
        assert deps.redis is redis
        assert running[REDIS] is redis
        # The app did not open its own, so it registers no readiness check for them either.
        assert "postgresql" not in running[HEALTH_CHECKS]
        assert "redis" not in running[HEALTH_CHECKS]
    assert not pool.closed
    assert not redis.closed


async def test_order_api_runs_on_the_pool_redis_and_users_client_it_is_given(
    jwt_files: dict[str, Path], pool: FakePool, redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    purged_with: list[object] = []

    async def purge_idempotency_keys(db: Any, *, ttl_s: float) -> int:
        purged_with.append(db)
        return 0

    monkeypatch.setattr(order_repository, "purge_idempotency_keys", purge_idempotency_keys)
    users = object()
    settings = OrderSettings(app_env="test", outbox_relay_enabled=False, **jwt_files)
    app = create_order_app(settings, pool=cast(Any, pool), redis=cast(Any, redis), users=cast(Any, users))
    async for running in started(app):
        deps = running[ORDER_DEPS]
        assert deps.pool is pool
        assert deps.users is users
        assert running[PG_POOL] is pool
    assert purged_with == [pool]  # the background purge works on the handed-in pool too
    assert not pool.closed
    assert not redis.closed


async def test_the_verifier_is_built_with_the_app_and_reads_the_redis_it_is_given(
    jwt_files: dict[str, Path], redis: FakeRedis
) -> None:
    settings = OrderSettings(app_env="test", outbox_relay_enabled=False, **jwt_files)
    app = create_order_app(settings, pool=cast(Any, FakePool()), redis=cast(Any, redis))
    token = mint(JwtSettings(**jwt_files), jti="revoked-one")
    assert (await app[TOKEN_VERIFIER].verify(token)).jti == "revoked-one"
    redis.data[revoked_jti_key("revoked-one")] = "1"
    with pytest.raises(Unauthenticated, match="revoked"):
        await app[TOKEN_VERIFIER].verify(token)
