"""Bearer-token authentication shared by every service, with the Redis revocation list.

user_api writes the revocation keys (logout, session reuse, user deletion); every service
reads them here, so a revoked token stops working everywhere at once.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.errors import DependencyUnavailable, Forbidden, Unauthenticated
from common.jwt import Caller, RevocationCheck, TokenVerifier, load_public_key
from common.settings import JwtSettings

TOKEN_VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("token_verifier", TokenVerifier)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)


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


def token_verifier(settings: JwtSettings, *, production: bool, redis: Callable[[], Redis]) -> TokenVerifier:
    """The one way every service builds its verifier; call it in ``create_app``.

    The key is read at build time: a missing or wrong key stops start-up at once, by name,
    instead of failing every request. ``redis`` is called per check, so the client may be
    opened later by a cleanup context (or handed in by a test).
    """
    return TokenVerifier(
        load_public_key(settings, production=production),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        is_revoked=redis_revocation_check(redis),
    )


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated()
    return token.strip()


async def authenticate(request: web.Request) -> Caller:
    """The verified caller of this request (cached on the request)."""
    if CALLER in request:
        return request[CALLER]
    caller = await request.app[TOKEN_VERIFIER].verify(bearer_token(request))
    request[CALLER] = caller
    return caller


async def require_admin(request: web.Request) -> Caller:
    caller = await authenticate(request)
    if not caller.is_admin:
        raise Forbidden("this operation needs the admin role")
    return caller
