"""The create-admin command's work, outside the CLI so tests can call it."""

from __future__ import annotations

import sys

from redis.asyncio import Redis

from common.db import create_pool
from common.errors import AppError
from common.jwt import load_private_key
from common.migrations import ensure_database, migrate_dsn
from common.redis import make_redis
from user_api import service
from user_api.deps import MIGRATIONS, build_deps
from user_api.settings import Settings


async def create_admin(settings: Settings, email: str, password: str, name: str) -> int:
    if not settings.is_production:
        await ensure_database(settings.dsn_for("postgres"), settings.user_db_name)
    await migrate_dsn(settings.dsn, MIGRATIONS)
    pool = await create_pool(settings.dsn, min_size=1, max_size=2)
    redis: Redis = make_redis(settings)
    try:
        deps = build_deps(
            settings, pool, redis, load_private_key(settings, production=settings.is_production)
        )
        try:
            user, created = await service.create_admin(deps, email, password, name)
        except AppError as exc:
            details = "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors or [])
            print(f"create-admin: {exc.detail}" + (f" ({details})" if details else ""), file=sys.stderr)
            return 2
        print(f"{'created' if created else 'promoted'} admin {user.email} ({user.id})")
        return 0
    finally:
        await pool.close()
        await redis.aclose()
