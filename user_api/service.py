"""The rules of user_api: registration, login, sessions, profile changes, permissions.

No aiohttp here; handlers translate HTTP into these calls and domain errors back into HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import bcrypt
import structlog
from email_validator import EmailNotValidError, validate_email
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common import ratelimit
from common.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from common.events import USER_CHANGED_CHANNEL, USER_REGISTERED, Contact
from common.jwt import Caller
from common.outbox import add_event
from common.validation import validate
from user_api import repository
from user_api.schemas import (
    PASSWORD_MAX_BYTES,
    LoginIn,
    Preferences,
    RegisterIn,
    TokensOut,
    UserOut,
    UserUpdateIn,
)
from user_api.settings import Settings
from user_api.tokens import RotateOutcome, TokenService

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    redis: Redis
    tokens: TokenService
    settings: Settings
    # A real bcrypt hash checked when the email is unknown, so both paths cost the same.
    dummy_hash: bytes


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise InvalidInput(
            "the email address is not valid", errors=[{"field": "email", "message": "invalid"}]
        ) from None


async def hash_password(password: str, rounds: int) -> str:
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds))
    return hashed.decode()


async def check_password(password: str, hashed: bytes) -> bool:
    candidate = password.encode()
    if len(candidate) > PASSWORD_MAX_BYTES:
        # bcrypt 5 refuses these and no stored password is that long; spend the same time anyway.
        await asyncio.to_thread(bcrypt.checkpw, candidate[:PASSWORD_MAX_BYTES], hashed)
        return False
    return await asyncio.to_thread(bcrypt.checkpw, candidate, hashed)


def user_out(row: asyncpg.Record) -> UserOut:
    return UserOut(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        phone=row["phone"],
        role=row["role"],
        notification_preferences=Preferences(
            email=row["notify_email"], sms=row["notify_sms"], push=row["notify_push"]
        ),
        push_token=row["push_token"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def contact(user: UserOut) -> dict[str, Any]:
    """The contact data copied into events, so workers never call back (docs/contracts.md)."""
    return Contact.model_validate(user.model_dump(mode="json")).event_data()


async def register(deps: Deps, body: RegisterIn, *, role: str = "user") -> UserOut:
    email = normalise_email(body.email)
    password_hash = await hash_password(body.password, deps.settings.bcrypt_rounds)
    prefs = body.notification_preferences
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            row = await repository.insert_user(
                conn,
                email=email,
                name=body.name,
                password_hash=password_hash,
                role=role,
                phone=body.phone,
                notify_email=prefs.email,
                notify_sms=prefs.sms,
                notify_push=prefs.push,
            )
            user = user_out(row)
            await add_event(conn, USER_REGISTERED, user.id, {"user": contact(user)}, producer="user_api")
    except asyncpg.UniqueViolationError:
        raise Conflict("an account with this email already exists") from None
    log.info("user_registered", **{"user.id": user.id})
    return user


def _limit_keys(deps: Deps, email: str, client_ip: str) -> list[tuple[str, int, int]]:
    cfg = deps.settings
    email_digest = hashlib.sha256(email.encode()).hexdigest()[:32]
    return [
        (f"rl:login:email:{email_digest}", cfg.login_max_attempts_per_email, cfg.login_rate_window_s),
        (f"rl:login:ip:{client_ip}", cfg.login_max_attempts_per_ip, cfg.login_rate_window_s),
    ]


async def login(deps: Deps, body: LoginIn, *, client_ip: str) -> TokensOut:
    email = body.email.strip().lower()
    # A malformed email is still rate limited and still costs a bcrypt check: no oracle.
    with contextlib.suppress(InvalidInput):
        email = normalise_email(email)
    limits = _limit_keys(deps, email, client_ip)
    await ratelimit.enforce(deps.redis, limits, what="login attempts")
    row = await repository.get_user_by_email(deps.pool, email)
    stored = row["password_hash"].encode() if row is not None else deps.dummy_hash
    password_ok = await check_password(body.password, stored)
    if row is None or not password_ok:
        log.info("login_failed")
        raise Unauthenticated("email or password is incorrect")
    user = user_out(row)
    # The per-email budget counts consecutive failures; the per-IP one keeps counting.
    await deps.redis.delete(limits[0][0])
    issued = await deps.tokens.open_session(user.id, user.role)
    log.info("login_succeeded", **{"user.id": user.id})
    return TokensOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
        user=user,
    )


async def refresh(deps: Deps, refresh_token: str) -> TokensOut:
    outcome, user_id, new_refresh = await deps.tokens.rotate(refresh_token)
    if outcome is RotateOutcome.REUSED:
        log.warning("refresh_token_reused_session_revoked")
        raise Unauthenticated("this refresh token was already used; the session has been revoked")
    if outcome is not RotateOutcome.ROTATED or user_id is None or new_refresh is None:
        raise Unauthenticated("the refresh token is invalid or expired")
    row = await repository.get_user(deps.pool, user_id)
    session_id = new_refresh.partition(".")[0]
    if row is None:
        await deps.tokens.revoke_session(session_id)
        raise Unauthenticated("the account no longer exists")
    user = user_out(row)
    return TokensOut(
        access_token=deps.tokens.access_token(user.id, user.role, session_id),
        refresh_token=new_refresh,
        expires_in=deps.tokens.access_ttl_s,
        user=user,
    )


async def logout(deps: Deps, caller: Caller) -> None:
    await deps.tokens.revoke_access_token(caller.jti, caller.expires_at)
    await deps.tokens.revoke_session(caller.session_id)
    log.info("logged_out", **{"user.id": caller.user_id})


def _cache_key(user_id: str) -> str:
    return f"cache:user:{user_id}"


async def _cache_drop(deps: Deps, user_id: str) -> None:
    try:
        await deps.redis.delete(_cache_key(user_id))
        # order_api keeps contacts in process for a few seconds and drops one on this message
        # (order_api/contact_cache.py); pub/sub is at most once, its TTL bounds a lost one.
        await deps.redis.publish(USER_CHANGED_CHANNEL, user_id)
    except RedisError:
        # A stale entry would outlive the change; say so loudly rather than fail the write.
        log.error("user_cache_invalidation_failed", **{"user.id": user_id})


def _authorize_target(caller: Caller, user_id: str) -> None:
    # Another user's id is indistinguishable from a missing one: no account enumeration.
    if not caller.is_admin and caller.user_id != user_id:
        raise NotFound("no such user")


async def get_user(deps: Deps, caller: Caller, user_id: str) -> UserOut:
    _authorize_target(caller, user_id)
    try:
        cached = await deps.redis.get(_cache_key(user_id))
    except RedisError:
        cached = None
    if cached:
        return UserOut.model_validate(json.loads(cached))
    row = await repository.get_user(deps.pool, user_id)
    if row is None:
        raise NotFound("no such user")
    user = user_out(row)
    try:
        await deps.redis.set(_cache_key(user_id), user.model_dump_json(), ex=deps.settings.user_cache_ttl_s)
    except RedisError:
        log.warning("user_cache_write_failed")
    return user


async def list_users(deps: Deps, *, limit: int, offset: int) -> tuple[list[UserOut], int]:
    rows, total = await repository.list_users(deps.pool, limit=limit, offset=offset)
    return [user_out(r) for r in rows], total


async def update_user(deps: Deps, caller: Caller, user_id: str, body: UserUpdateIn) -> UserOut:
    _authorize_target(caller, user_id)
    current = await repository.get_user(deps.pool, user_id)
    if current is None:
        raise NotFound("no such user")
    sent = body.model_fields_set
    changes: dict[str, Any] = {}
    if "role" in sent and body.role != current["role"]:
        if not caller.is_admin:
            raise Forbidden("only an admin may change a role")
        changes["role"] = body.role
    for field in ("name", "phone", "push_token"):
        if field in sent:
            if field == "name" and body.name is None:
                raise InvalidInput("name cannot be empty", errors=[{"field": "name", "message": "required"}])
            changes[field] = getattr(body, field)
    if "email" in sent:
        if body.email is None:
            raise InvalidInput("email cannot be empty", errors=[{"field": "email", "message": "required"}])
        changes["email"] = normalise_email(body.email)
    if body.notification_preferences is not None:
        for channel, value in body.notification_preferences.model_dump(exclude_none=True).items():
            changes[f"notify_{channel}"] = value
    if "password" in sent and body.password is not None:
        # An admin may reset someone else's password; one's own always needs the current one.
        needs_current = not caller.is_admin or caller.user_id == user_id
        if needs_current and (
            body.current_password is None
            or not await check_password(body.current_password, current["password_hash"].encode())
        ):
            raise Forbidden("changing the password needs the current password")
        changes["password_hash"] = await hash_password(body.password, deps.settings.bcrypt_rounds)
    try:
        row = await repository.update_user(deps.pool, user_id, changes)
    except asyncpg.UniqueViolationError:
        raise Conflict("an account with this email already exists") from None
    if row is None:
        raise NotFound("no such user")
    await _cache_drop(deps, user_id)
    if "role" in changes or "password_hash" in changes:
        # Live tokens carry the old role; a password change should end other sessions too.
        await deps.tokens.revoke_all_sessions(user_id)
    return user_out(row)


async def delete_user(deps: Deps, caller: Caller, user_id: str) -> None:
    _authorize_target(caller, user_id)
    if not await repository.soft_delete_user(deps.pool, user_id):
        raise NotFound("no such user")
    await _cache_drop(deps, user_id)
    revoked = await deps.tokens.revoke_all_sessions(user_id)
    log.info("user_deleted", **{"user.id": user_id, "sessions_revoked": revoked})


async def create_admin(deps: Deps, email: str, password: str, name: str) -> tuple[UserOut, bool]:
    """Create the admin, or promote and re-password an existing account. True if created."""
    body = validate(RegisterIn, {"email": email, "password": password, "name": name})
    existing = await repository.get_user_by_email(deps.pool, normalise_email(body.email))
    if existing is None:
        return await register(deps, body, role="admin"), True
    password_hash = await hash_password(body.password, deps.settings.bcrypt_rounds)
    row = await repository.set_role_and_password(
        deps.pool, existing["id"], role="admin", password_hash=password_hash
    )
    assert row is not None
    await _cache_drop(deps, existing["id"])
    return user_out(row), False
