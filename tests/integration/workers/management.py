"""The RabbitMQ management HTTP API, as an operator's browser uses it (queues, "Get messages").

The plugin is enabled by ``deploy.sh local`` / ``monitoring.sh`` (``rabbitmq-plugins enable
rabbitmq_management``); on a local broker without it (a fresh CI machine) the first call enables
it. A test that needs it fails, and says so, when it still does not answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests

from tests.conftest import _rabbitmqctl

MANAGEMENT_URL = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
AUTH = (os.environ.get("RABBITMQ_USERNAME", "guest"), os.environ.get("RABBITMQ_PASSWORD", "guest"))


def _enable_plugin() -> bool:
    """The local broker without its management plugin (a fresh CI machine): enable it, once."""
    exe = shutil.which("rabbitmq-plugins")
    if exe is None or urlsplit(MANAGEMENT_URL).hostname not in ("127.0.0.1", "localhost"):
        return False
    subprocess.run(
        [exe, "enable", "--quiet", "rabbitmq_management"], check=False, capture_output=True, timeout=120
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{MANAGEMENT_URL}/api/overview", auth=AUTH, timeout=5)
            return True
        except requests.ConnectionError:
            time.sleep(0.5)
    return False


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"{MANAGEMENT_URL}/api{path}"
    try:
        response = requests.request(method, url, json=body, auth=AUTH, timeout=10)
    except requests.ConnectionError as exc:
        if not _enable_plugin():
            pytest.fail(
                f"RabbitMQ management API not reachable at {MANAGEMENT_URL} "
                f"(enable rabbitmq_management): {exc}"
            )
        response = requests.request(method, url, json=body, auth=AUTH, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


def queue_info(vhost: str, queue: str) -> dict[str, Any]:
    info: dict[str, Any] = _call("GET", f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}")
    return info


def get_messages(vhost: str, queue: str, count: int = 10) -> list[dict[str, Any]]:
    """What the UI's *Get messages* button shows; the messages stay in the queue."""
    body = {"count": count, "ackmode": "reject_requeue_true", "encoding": "auto", "truncate": 50_000}
    messages: list[dict[str, Any]] = _call(
        "POST", f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/get", body
    )
    return messages


@contextmanager
def scratch_vhost(label: str) -> Iterator[str]:
    """A vhost of its own, for a test that needs a broker in a given state (classic queues)."""
    vhost = f"test_{label}_{uuid.uuid4().hex[:8]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, AUTH[0], ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot create a RabbitMQ vhost with rabbitmqctl: {exc}")
    try:
        yield vhost
    finally:
        _rabbitmqctl("delete_vhost", vhost)
