"""JWT verification with pinned asymmetric algorithms, and development key provisioning.

Only user_api holds the private key and signs; every service verifies with the public key.
EdDSA (Ed25519) is pinned on decode, so ``alg: none`` and HS256-with-the-public-key forgeries
fail before any claim is read.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import Unauthenticated
from common.settings import JwtSettings, SettingsError

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "jti", "role", "sid"]
ROLES = frozenset({"user", "admin"})
LEEWAY_S = 5
# Verified tokens kept per process: one per active client is plenty.
VERIFIED_CACHE_SIZE = 10_000
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling, as proven by a verified access token."""

    user_id: str
    role: str
    jti: str
    session_id: str
    expires_at: int
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


RevocationCheck = Callable[[str, str], Awaitable[bool]]


class TokenVerifier:
    def __init__(
        self,
        public_key: Ed25519PublicKey,
        *,
        issuer: str,
        audience: str,
        is_revoked: RevocationCheck | None = None,
    ) -> None:
        self._key = public_key
        self._issuer = issuer
        self._audience = audience
        self._is_revoked = is_revoked
        # Tokens already verified, by their exact text: a client sends the same access token
        # for its whole lifetime, and an Ed25519 check plus the claim checks cost more than the
        # rest of a GET (issue 11). Expiry is checked on every use; revocation is never cached.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def verify(self, token: str) -> Caller:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
            if claims["exp"] + LEEWAY_S <= time.time():
                del self._verified[token]
                raise Unauthenticated("the access token has expired")
        if self._is_revoked is not None and await self._is_revoked(claims["jti"], claims["sid"]):
            raise Unauthenticated("the access token has been revoked")
        return Caller(
            user_id=claims["sub"],
            role=claims["role"],
            jti=claims["jti"],
            session_id=claims["sid"],
            expires_at=int(claims["exp"]),
            token=token,
        )

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": REQUIRED_CLAIMS},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is invalid") from None
        if claims.get("typ", "access") != "access" or claims["role"] not in ROLES:
            raise Unauthenticated("the access token is invalid")
        if not all(isinstance(claims[c], str) for c in ("sub", "jti", "sid", "role")):
            raise Unauthenticated("the access token is invalid")
        return claims


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: if two processes race to provision keys, exactly one wins and the other reads it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_dev_keypair(settings: JwtSettings) -> None:
    """Generate a key pair on first run in development; never in production."""
    priv, pub = settings.jwt_private_key_file, settings.jwt_public_key_file
    if priv.exists() and pub.exists():
        return
    if priv.exists() != pub.exists():
        raise SettingsError(
            f"only one of JWT_PRIVATE_KEY_FILE ({priv}) and JWT_PUBLIC_KEY_FILE ({pub}) exists; "
            "remove it to regenerate the development pair"
        )
    key = Ed25519PrivateKey.generate()
    try:
        _write_private(
            priv,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    except FileExistsError:
        return
    tmp = pub.with_suffix(".tmp")
    tmp.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    tmp.replace(pub)
    log.warning("jwt_dev_keys_generated", private_key=str(priv), public_key=str(pub))


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def load_public_key(settings: JwtSettings, *, production: bool) -> Ed25519PublicKey:
    if not production:
        ensure_dev_keypair(settings)
    data = _read(settings.jwt_public_key_file, "JWT_PUBLIC_KEY_FILE")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SettingsError("JWT_PUBLIC_KEY_FILE: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SettingsError("JWT_PUBLIC_KEY_FILE: expected an Ed25519 public key")
    return key


def load_private_key(settings: JwtSettings, *, production: bool) -> Ed25519PrivateKey:
    if not production:
        ensure_dev_keypair(settings)
    data = _read(settings.jwt_private_key_file, "JWT_PRIVATE_KEY_FILE")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SettingsError("JWT_PRIVATE_KEY_FILE: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError("JWT_PRIVATE_KEY_FILE: expected an Ed25519 private key")
    return key
