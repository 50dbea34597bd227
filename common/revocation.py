"""Revoked tokens in Redis: the keys user_api writes on logout and every verifier reads.

No aiohttp here: user_api's token rules (``user_api/tokens.py``) write these keys without
pulling in the request-authentication side (``common/auth.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.errors import DependencyUnavailable
from common.jwt import RevocationCheck


def revoked_jti_key(jti: str) -> str:
    return f"auth:revoked:jti:{jti}"


def revoked_session_key(session_id: str) -> str:
    return f"auth:revoked:sid:{session_id}"


def redis_revocation_check(redis: Callable[[], Redis]) -> RevocationCheck:
    async def is_revoked(jti: str, session_id: str) -> bool:
        try:
            found = await redis().exists(revoked_jti_key(jti), revoked_session_key(session_id))
        except RedisError:
            # Fail closed: without the revocation list we cannot tell a logged-out token apart.
            raise DependencyUnavailable("cannot check token revocation right now", retry_after_s=2) from None
        return int(found) > 0

    return is_revoked
