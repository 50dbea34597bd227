"""End-to-end suite: a running ``./scripts/deploy.sh local`` stack, reached through the gateway only.

Run by ``scripts/integration-tests.sh`` (``pytest -m live_stack tests/e2e``). The mail sink and the
fake SMS/push provider are read directly: they stand where the outside world would be.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1").rstrip("/")
MAIL_URL = os.environ.get("MAIL_SINK_URL", "http://127.0.0.1:8025")
FAKE_PROVIDER_URL = os.environ.get("FAKE_PROVIDER_URL", "http://127.0.0.1:8090")
ADMIN_EMAIL = os.environ.get("ADMIN_EMAIL", "admin@example.com")
ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD", "admin-dev-password")
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    try:
        session.get(f"{GATEWAY_URL}/health", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"no running stack behind {GATEWAY_URL} (./scripts/deploy.sh local): {exc}")
    yield session
    session.close()


@dataclass
class User:
    id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def login(http: requests.Session, email: str, password: str) -> dict[str, Any]:
    # The gateway allows 30 logins a minute per address; a well-behaved client waits on a 429.
    for _ in range(30):
        response = http.post(
            f"{GATEWAY_URL}/api/auth/login", json={"email": email, "password": password}, timeout=10
        )
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "2")))
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


@pytest.fixture
def new_user(http: requests.Session) -> Callable[..., User]:
    def make(**fields: Any) -> User:
        email = f"e2e.{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": "E2E Tester", **fields}
        created = http.post(f"{GATEWAY_URL}/api/auth/register", json=body, timeout=10)
        assert created.status_code == 201, created.text
        tokens = login(http, email, PASSWORD)
        return User(tokens["user"]["id"], email, tokens["access_token"])

    return make


@pytest.fixture(scope="session")
def admin(http: requests.Session) -> User:
    tokens = login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
    return User(tokens["user"]["id"], ADMIN_EMAIL, tokens["access_token"])


def eventually(probe: Callable[[], Any], *, timeout_s: float = 30, what: str = "condition") -> Any:
    """Poll until ``probe`` returns something truthy; the asynchronous half takes seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.3)


def mails_to(http: requests.Session, email: str) -> list[dict[str, Any]]:
    listing = http.get(f"{MAIL_URL}/messages", timeout=5).json()
    return [m for m in listing["items"] if m["envelope_to"] == email]
