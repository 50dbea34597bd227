"""Forged, tampered, expired and revoked tokens are each refused with 401."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.user_api.conftest import Account
from tests.openapi_check import CheckedClient
from user_api.settings import Settings

NewAccount = Callable[..., Awaitable[Account]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(settings: Settings, account: Account, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": account.id,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "role": "user",
        "sid": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return claims


def _sign(settings: Settings, claims: dict[str, Any]) -> str:
    key = serialization.load_pem_private_key(Path(settings.jwt_private_key_file).read_bytes(), password=None)
    return jwt.encode(claims, key, algorithm="EdDSA")  # type: ignore[arg-type]


async def _status(client: CheckedClient, token: str) -> int:
    return (await client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})).status


async def test_a_correctly_signed_token_is_accepted(
    client: CheckedClient, new_account: NewAccount, settings: Settings
) -> None:
    # The control case: the forgeries below fail for their flaw, not for the harness.
    account = await new_account()
    assert await _status(client, _sign(settings, _claims(settings, account))) == 200


async def test_forged_tokens_are_refused(
    client: CheckedClient, new_account: NewAccount, settings: Settings
) -> None:
    account = await new_account()
    claims = _claims(settings, account)
    public_pem = Path(settings.jwt_public_key_file).read_bytes()

    alg_none = (
        f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."
    )
    # The classic key-confusion attack: HMAC keyed with the public key the verifier holds.
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    import hashlib
    import hmac

    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    hs256_with_public_key = f"{header}.{payload}.{_b64(mac)}"
    other_key = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")

    real = account.access_token
    head, body, sig = real.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    tampered_role = f"{head}.{_b64(json.dumps(decoded | {'role': 'admin'}).encode())}.{sig}"

    forgeries = {
        "alg none": alg_none,
        "HS256 signed with the public key": hs256_with_public_key,
        "signed by another key": other_key,
        "wrong issuer": _sign(settings, _claims(settings, account, iss="someone-else")),
        "wrong audience": _sign(settings, _claims(settings, account, aud="another-app")),
        "expired": _sign(
            settings, _claims(settings, account, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
        ),
        "tampered role": tampered_role,
        "unknown role": _sign(settings, _claims(settings, account, role="root")),
        "missing jti": _sign(settings, {k: v for k, v in claims.items() if k != "jti"}),
        "refresh-typed": _sign(settings, _claims(settings, account, typ="refresh")),
        "malformed": "not.a.jwt",
        "empty": "",
    }
    for name, token in forgeries.items():
        assert await _status(client, token) == 401, name


async def test_a_revoked_jti_is_refused(client: CheckedClient, new_account: NewAccount) -> None:
    account = await new_account()
    assert await _status(client, account.access_token) == 200
    assert (await client.post("/api/auth/logout", headers=account.auth)).status == 204
    assert await _status(client, account.access_token) == 401


async def test_non_bearer_schemes_are_refused(client: CheckedClient, new_account: NewAccount) -> None:
    account = await new_account()
    for header in (f"Basic {account.access_token}", account.access_token, "Bearer"):
        response = await client.get("/api/users/me", headers={"Authorization": header})
        assert response.status == 401
