"""Property-based fuzzing of the running order service from its OpenAPI document (schemathesis).

Every generated request, valid or not, must get a documented answer and never a 5xx. order_api
and the user_api it validates callers against run as real processes on their own ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from order_api.routes import OPENAPI_PATH
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[3]
schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))
# The token is set below for every case; a generated (or deliberately missing) Authorization header
# would be overwritten and make a valid request look like accepted negative data.
schema.config.generation.update(with_security_parameters=False)


def _start(module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", module, "serve", "--port", str(port)], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.terminate()
            pytest.fail(f"{module} did not start for fuzzing")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live_service(
    database_factory: Callable[[str], str], jwt_keys: dict[str, str]
) -> Iterator[dict[str, str]]:
    user_port, order_port = free_port(), free_port()
    env = {
        **os.environ,
        "USER_DB_NAME": database_factory("users_fuzz"),
        "ORDER_DB_NAME": database_factory("orders_fuzz"),
        "REDIS_DB": os.environ.get("TEST_REDIS_DB", "15"),
        "JWT_PUBLIC_KEY_FILE": jwt_keys["jwt_public_key_file"],
        "JWT_PRIVATE_KEY_FILE": jwt_keys["jwt_private_key_file"],
        "USER_SERVICE_URL": f"http://127.0.0.1:{user_port}",
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "WARNING",
        "OUTBOX_RELAY_ENABLED": "false",
        "BCRYPT_ROUNDS": "4",
    }
    users = _start("user_api", user_port, env)
    try:
        orders = _start("order_api", order_port, env)
        try:
            email = f"fuzz.{uuid.uuid4().hex[:8]}@example.com"
            user_base = f"http://127.0.0.1:{user_port}"
            requests.post(
                f"{user_base}/api/auth/register",
                json={"email": email, "password": "fuzzing password", "name": "F"},
                timeout=10,
            )
            tokens = requests.post(
                f"{user_base}/api/auth/login",
                json={"email": email, "password": "fuzzing password"},
                timeout=10,
            ).json()
            yield {"base_url": f"http://127.0.0.1:{order_port}", "token": tokens["access_token"]}
        finally:
            orders.terminate()
            orders.wait(timeout=15)
    finally:
        users.terminate()
        users.wait(timeout=15)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx_or_an_undocumented_answer(
    case: schemathesis.Case, live_service: dict[str, str]
) -> None:
    # positive_data_acceptance is off: the service is stricter than JSON Schema can say (each sku
    # once, amounts of at least 0.01 with two decimals, 2.0 is not a quantity), on purpose.
    case.call_and_validate(
        base_url=live_service["base_url"],
        headers={"Authorization": f"Bearer {live_service['token']}"},
        excluded_checks=[schemathesis.checks.ignored_auth, schemathesis.checks.positive_data_acceptance],
    )
