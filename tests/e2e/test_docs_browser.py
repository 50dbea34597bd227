"""The API console at /docs, in a real browser: Debian's headless Chromium driven by playwright-core.

``tests/browser/docs_console.mjs`` does what a person would (pick each API in the definition
selector, register, log in, paste the token into "Authorize", call ``GET /api/users/me``, place an
order) and reports what the page showed; the assertions are here. The screenshot it takes is CI's
artifact: ``var/artifacts/docs.png`` (``DOCS_SCREENSHOT`` moves it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest
import requests

from tests.e2e.conftest import GATEWAY_URL, PASSWORD

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "browser"
SCREENSHOT = Path(os.environ.get("DOCS_SCREENSHOT", ROOT / "var" / "artifacts" / "docs.png"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.live_stack


def _missing(what: str) -> NoReturn:
    # As tests/config does: under CI a missing tool is a failure (.ci/run installs it), elsewhere a skip.
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(what)
    pytest.skip(what)


def _ensure_playwright_core(npm: str) -> None:
    """``npm ci`` when node_modules does not hold the locked playwright-core (cheap when it does)."""
    lock = json.loads((BROWSER_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/playwright-core"]["version"]
    installed = BROWSER_DIR / "node_modules" / "playwright-core" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == wanted:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci in tests/browser failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def console(http: requests.Session) -> dict[str, Any]:
    """One run of the browser through the console; every test below reads its report."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        _missing("node and npm are not installed (apt-get install nodejs npm)")
    if not Path(CHROMIUM).is_file():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    _ensure_playwright_core(npm)
    SCREENSHOT.unlink(missing_ok=True)
    env = {
        **os.environ,
        "DOCS_URL": f"{GATEWAY_URL}/docs",
        "SCREENSHOT": str(SCREENSHOT),
        "EMAIL": f"console.{uuid.uuid4().hex[:10]}@example.com",
        "PASSWORD": PASSWORD,
        "NAME": "Console Tester",
        "CHROMIUM": CHROMIUM,
    }
    result = subprocess.run(
        [node, str(BROWSER_DIR / "docs_console.mjs")],
        cwd=BROWSER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"the browser run failed:\n{result.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    report["email"] = env["EMAIL"]
    return report


def test_the_console_lists_the_three_apis_from_their_own_documents(console: dict[str, Any]) -> None:
    assert console["definitions"] == ["User API", "Order API", "Notification API"]
    # Each title is rendered from that service's own openapi.yaml (OpenAPI 3.1: a Swagger UI
    # older than 5 shows "Unable to render this definition" instead).
    assert console["titles"] == {
        "User API": "User Service",
        "Order API": "Order Service",
        "Notification API": "Notification Service",
    }


def test_try_it_out_goes_through_the_gateway(console: dict[str, Any]) -> None:
    # servers: [{url: /}] resolves against the document's address: the gateway that serves /docs.
    urls = {name: call["requestUrl"] for name, call in console["calls"].items()}
    assert urls == {
        "register": f"{GATEWAY_URL}/api/auth/register",
        "login": f"{GATEWAY_URL}/api/auth/login",
        "me": f"{GATEWAY_URL}/api/users/me",
        "order": f"{GATEWAY_URL}/api/orders",
    }


def test_a_person_registers_logs_in_and_authorizes_with_the_bearer_token(console: dict[str, Any]) -> None:
    calls = console["calls"]
    assert calls["register"]["status"] == 201, calls["register"]
    assert calls["login"]["status"] == 200, calls["login"]
    me = calls["me"]
    assert me["sentBearer"], "the call after Authorize carried no bearer token"
    assert me["status"] == 200, me
    assert json.loads(me["body"])["email"] == console["email"]


def test_an_order_is_placed_from_the_order_api(console: dict[str, Any]) -> None:
    order = console["calls"]["order"]
    assert order["sentBearer"]
    assert order["status"] == 201, order
    placed = json.loads(order["body"])
    assert placed["user_id"] == json.loads(console["calls"]["me"]["body"])["id"]
    assert placed["total"] == "9.00"


def test_the_console_loads_nothing_from_elsewhere_and_breaks_no_csp_rule(console: dict[str, Any]) -> None:
    assert console["otherOrigins"] == []
    assert console["cspViolations"] == []
    # A 429 on login (other suites share the gateway's login budget) is retried, not an error.
    errors = [e for e in console["consoleErrors"] if "status of 429" not in e]
    assert errors == []


def test_a_screenshot_is_kept_for_ci(console: dict[str, Any]) -> None:
    assert console["screenshot"] == str(SCREENSHOT)
    data = SCREENSHOT.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280
    assert height > 900  # the whole page, not a blank viewport
