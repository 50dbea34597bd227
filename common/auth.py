"""Bearer-token authentication shared by every service, with the Redis revocation list.

user_api writes the revocation keys (logout, session reuse, user deletion); every service
reads them through ``common/revocation.py``, so a revoked token stops working everywhere at once.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from redis.asyncio import Redis

from common.errors import Forbidden, Unauthenticated
from common.jwt import Caller, TokenVerifier, load_public_key
from common.revocation import redis_revocation_check
from common.settings import JwtSettings

TOKEN_VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("token_verifier", TokenVerifier)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)


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
