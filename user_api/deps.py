"""What user_api's rules work with, built one way for the app and the create-admin command."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import bcrypt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from common.outbox import OUTBOX_MIGRATIONS
from user_api.service import Deps
from user_api.settings import Settings
from user_api.tokens import TokenService

MIGRATIONS = [OUTBOX_MIGRATIONS, ("user_api", Path(__file__).parent / "sql")]


def build_deps(settings: Settings, pool: asyncpg.Pool, redis: Redis, private_key: Ed25519PrivateKey) -> Deps:
    tokens = TokenService(
        redis,
        private_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_s=settings.access_token_ttl_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )
    # Checked when the email is unknown, at the configured cost, so both login paths take as long.
    dummy_hash = bcrypt.hashpw(b"timing-equaliser", bcrypt.gensalt(settings.bcrypt_rounds))
    return Deps(pool, redis, tokens, settings, dummy_hash)
