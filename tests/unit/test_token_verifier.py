"""The one token verifier every service builds (common.auth.token_verifier), with a fake Redis."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.auth import token_verifier
from common.errors import DependencyUnavailable, Unauthenticated
from common.jwt import TokenVerifier, load_private_key
from common.revocation import revoked_jti_key, revoked_session_key
from common.settings import JwtSettings, SettingsError
from tests.unit.fakes import FakeRedis


@pytest.fixture
def settings(jwt_files: dict[str, Path]) -> JwtSettings:
    return JwtSettings(**jwt_files)


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def verifier(settings: JwtSettings, redis: FakeRedis) -> TokenVerifier:
    return token_verifier(settings, production=True, redis=lambda: cast(Any, redis))


def mint(settings: JwtSettings, key: Ed25519PrivateKey | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "role": "user",
        "sid": str(uuid.uuid4()),
        "typ": "access",
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None},
        key or load_private_key(settings, production=True),
        algorithm="EdDSA",
    )


async def test_a_valid_token_names_its_caller(verifier: TokenVerifier, settings: JwtSettings) -> None:
    user_id = str(uuid.uuid4())
    caller = await verifier.verify(mint(settings, sub=user_id, role="admin"))
    assert caller.user_id == user_id
    assert caller.is_admin


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"aud": "someone-else"}, "invalid"),
        ({"iss": "someone-else"}, "invalid"),
        ({"typ": "refresh"}, "invalid"),
        ({"role": "root"}, "invalid"),
        ({"sid": None}, "invalid"),
    ],
)
async def test_a_token_that_is_not_ours_for_access_is_refused(
    verifier: TokenVerifier, settings: JwtSettings, claims: dict[str, Any], message: str
) -> None:
    with pytest.raises(Unauthenticated, match=message):
        await verifier.verify(mint(settings, **claims))


async def test_a_token_signed_by_another_key_is_refused(
    verifier: TokenVerifier, settings: JwtSettings
) -> None:
    with pytest.raises(Unauthenticated, match="invalid"):
        await verifier.verify(mint(settings, key=Ed25519PrivateKey.generate()))


async def test_alg_none_is_refused(verifier: TokenVerifier, settings: JwtSettings) -> None:
    _, payload, _ = mint(settings).split(".")
    unsigned_header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    with pytest.raises(Unauthenticated):
        await verifier.verify(f"{unsigned_header}.{payload}.")


@pytest.mark.parametrize("revoked", ["jti", "session"])
async def test_a_revoked_token_or_session_is_refused(
    verifier: TokenVerifier, settings: JwtSettings, redis: FakeRedis, revoked: str
) -> None:
    jti, session_id = uuid.uuid4().hex, str(uuid.uuid4())
    token = mint(settings, jti=jti, sid=session_id)
    await verifier.verify(token)
    redis.data[revoked_jti_key(jti) if revoked == "jti" else revoked_session_key(session_id)] = "1"
    with pytest.raises(Unauthenticated, match="revoked"):
        await verifier.verify(token)


async def test_without_the_revocation_list_it_fails_closed(settings: JwtSettings) -> None:
    class DownRedis(FakeRedis):
        async def exists(self, *keys: str) -> int:
            import redis.exceptions

            raise redis.exceptions.ConnectionError("Connection refused")

    down = token_verifier(settings, production=True, redis=lambda: cast(Any, DownRedis()))
    with pytest.raises(DependencyUnavailable):
        await down.verify(mint(settings))


def test_a_missing_key_stops_start_up_by_name(tmp_path: Path) -> None:
    settings = JwtSettings(
        jwt_public_key_file=tmp_path / "nope.pem", jwt_private_key_file=tmp_path / "nope2.pem"
    )
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_FILE"):
        token_verifier(settings, production=True, redis=lambda: cast(Any, FakeRedis()))


async def test_a_verified_token_is_still_checked_for_expiry_and_revocation_on_every_use(
    verifier: TokenVerifier, settings: JwtSettings, redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second use is served from the cache of verified tokens: revocation is asked again...
    jti, sid = uuid.uuid4().hex, str(uuid.uuid4())
    token = mint(settings, jti=jti, sid=sid, exp=int(time.time()) + 60)
    assert (await verifier.verify(token)).jti == jti
    assert (await verifier.verify(token)).session_id == sid
    await redis.set(revoked_jti_key(jti), "1")
    with pytest.raises(Unauthenticated, match="revoked"):
        await verifier.verify(token)
    # ... and so is the expiry, against the clock of this use, not of the first one.
    other = mint(settings, exp=int(time.time()) + 60)
    await verifier.verify(other)
    later = time.time() + 120
    monkeypatch.setattr("common.jwt.time.time", lambda: later)
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.verify(other)


async def test_a_forged_copy_of_a_verified_token_is_not_served_from_the_cache(
    verifier: TokenVerifier, settings: JwtSettings
) -> None:
    token = mint(settings)
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    forged = jwt.encode(
        {**jwt.decode(token, options={"verify_signature": False}), "role": "admin"},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
    )
    assert forged.split(".")[0] == header
    assert forged.split(".")[1] != payload
    with pytest.raises(Unauthenticated, match="invalid"):
        await verifier.verify(forged)
    with pytest.raises(Unauthenticated, match="invalid"):
        await verifier.verify(f"{header}.{payload}.{signature[:-4]}AAAA")
