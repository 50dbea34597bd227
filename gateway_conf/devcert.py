"""A self-signed certificate for the gateway in development (host mode and compose alike).

Staging and production mount real certificates; there a missing certificate is an error,
never silently replaced by a self-signed one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

PRODUCTION_ENVS = ("staging", "production")


def ensure_dev_certificate(cert: Path, key: Path, *, server_name: str, app_env: str) -> bool:
    """Create ``cert`` and ``key`` unless both exist; True if they were created."""
    if cert.exists() and key.exists():
        return False
    if app_env in PRODUCTION_ENVS:
        raise FileNotFoundError(
            f"no TLS certificate at {cert} and {key}; APP_ENV={app_env} needs a real one mounted there"
        )
    if cert.exists() != key.exists():
        raise FileNotFoundError(f"only one of {cert} and {key} exists; remove it to create a new pair")

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, server_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "microservices-app development"),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(server_name)]
    if server_name != "localhost":
        alt_names.append(x509.DNSName("localhost"))
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    key.parent.mkdir(parents=True, exist_ok=True)
    cert.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True
