"""Access tokens (EdDSA JWTs) and refresh-token sessions kept in Redis.

A session is created at login. Its refresh token is ``<session id>.<secret>``; Redis keeps only
a hash of the current secret and of the secrets already used. Refreshing swaps the secret
atomically (a Lua script), so two racing refreshes cannot both win; presenting a used secret
means the token was stolen or replayed, and the whole session is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from enum import IntEnum

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from common.jwt import ALGORITHM
from common.revocation import revoked_jti_key, revoked_session_key

JWT_LEEWAY_S = 5


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


class RotateOutcome(IntEnum):
    NO_SESSION = 0
    ROTATED = 1
    REUSED = 2
    UNKNOWN = 3


# KEYS[1] session hash, KEYS[2] used-secret set; ARGV: presented hash, new hash, ttl seconds.
ROTATE_LUA = """
local current = redis.call('HGET', KEYS[1], 'refresh_hash')
if not current then return 0 end
if current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'refresh_hash', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return 1
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 2 end
return 3
"""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def session_key(session_id: str) -> str:
    return f"auth:session:{session_id}"


def used_key(session_id: str) -> str:
    return f"auth:session:{session_id}:used"


def user_sessions_key(user_id: str) -> str:
    return f"auth:user_sessions:{user_id}"


def split_refresh_token(token: str) -> tuple[str, str] | None:
    session_id, dot, secret = token.partition(".")
    if not dot or not secret:
        return None
    try:
        uuid.UUID(session_id)
    except ValueError:
        return None
    return session_id, secret


class TokenService:
    def __init__(
        self,
        redis: Redis,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
    ) -> None:
        self._redis = redis
        self._key = private_key
        self._issuer = issuer
        self._audience = audience
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self._rotate = redis.register_script(ROTATE_LUA)

    def access_token(self, user_id: str, role: str, session_id: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "iat": now,
            "exp": now + self.access_ttl_s,
            "jti": uuid.uuid4().hex,
            "role": role,
            "sid": session_id,
            "typ": "access",
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    async def open_session(self, user_id: str, role: str) -> IssuedTokens:
        session_id = str(uuid.uuid4())
        secret = secrets.token_urlsafe(32)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(session_key(session_id), mapping={"user_id": user_id, "refresh_hash": _hash(secret)})
            pipe.expire(session_key(session_id), self.refresh_ttl_s)
            pipe.sadd(user_sessions_key(user_id), session_id)
            pipe.expire(user_sessions_key(user_id), self.refresh_ttl_s)
            await pipe.execute()
        return IssuedTokens(
            self.access_token(user_id, role, session_id), f"{session_id}.{secret}", self.access_ttl_s
        )

    async def rotate(self, refresh_token: str) -> tuple[RotateOutcome, str | None, str | None]:
        """Swap the refresh secret. Returns (outcome, user id, new refresh token)."""
        parts = split_refresh_token(refresh_token)
        if parts is None:
            return RotateOutcome.UNKNOWN, None, None
        session_id, secret = parts
        new_secret = secrets.token_urlsafe(32)
        outcome = RotateOutcome(
            int(
                await self._rotate(
                    keys=[session_key(session_id), used_key(session_id)],
                    args=[_hash(secret), _hash(new_secret), self.refresh_ttl_s],
                )
            )
        )
        if outcome is RotateOutcome.REUSED:
            await self.revoke_session(session_id)
            return outcome, None, None
        if outcome is not RotateOutcome.ROTATED:
            return outcome, None, None
        user_id = await self.session_owner(session_id)
        return outcome, user_id, f"{session_id}.{new_secret}"

    async def session_owner(self, session_id: str) -> str | None:
        # The client is built with decode_responses=True: values come back as str.
        owner = await self._redis.hget(session_key(session_id), "user_id")
        return str(owner) if owner is not None else None

    async def revoke_session(self, session_id: str) -> None:
        """End a session: its refresh token stops working and so do its live access tokens."""
        user_id = await self.session_owner(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(session_key(session_id))
            # Keep the used set a while longer, so a replay after revocation is still recognised.
            pipe.set(revoked_session_key(session_id), "1", ex=self.access_ttl_s + JWT_LEEWAY_S)
            if user_id:
                pipe.srem(user_sessions_key(user_id), session_id)
            await pipe.execute()

    async def revoke_all_sessions(self, user_id: str) -> int:
        session_ids = await self._redis.smembers(user_sessions_key(user_id))
        for session_id in session_ids:
            await self.revoke_session(str(session_id))
        await self._redis.delete(user_sessions_key(user_id))
        return len(session_ids)

    async def revoke_access_token(self, jti: str, expires_at: int) -> None:
        remaining = expires_at - int(time.time()) + JWT_LEEWAY_S
        if remaining > 0:
            await self._redis.set(revoked_jti_key(jti), "1", ex=remaining)
