"""One trace id, end to end: gateway access log → order_api → event → worker → email header."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import GATEWAY_URL, User, eventually, mails_to

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = Path(os.environ.get("LOG_DIR", ROOT / "var" / "log"))
ORDER = {"currency": "EUR", "items": [{"sku": "PEN-1", "name": "A pen", "quantity": 3, "unit_price": "1.50"}]}

pytestmark = pytest.mark.live_stack


def _lines_with(trace_id: str, *logs: str) -> list[dict[str, Any]]:
    found = []
    for name in logs:
        for path in LOG_DIR.glob(name):
            for line in path.read_text(errors="replace").splitlines():
                if trace_id in line and line.startswith("{"):
                    found.append(json.loads(line))
    return found


def _trace(entry: dict[str, Any]) -> Any:
    # ECS documents may be flat ("trace.id") or nested ({"trace": {"id": …}}).
    return entry.get("trace.id") or entry.get("trace", {}).get("id")


def test_one_order_is_followed_by_its_trace_id_from_gateway_to_email(
    http: requests.Session, new_user: Callable[..., User]
) -> None:
    user = new_user()
    trace_id = f"e2e{uuid.uuid4().hex}"
    created = http.post(
        f"{GATEWAY_URL}/api/orders", json=ORDER, headers={**user.auth, "X-Request-ID": trace_id}, timeout=10
    )
    assert created.status_code == 201, created.text
    assert created.headers["X-Request-ID"] == trace_id

    gateway = eventually(
        lambda: _lines_with(trace_id, "gateway.access.log"), what="the gateway's access log line"
    )
    assert gateway[0]["http.request.method"] == "POST"
    assert _trace(gateway[0]) == trace_id

    # Services write their info lines in batches (common.logsink): the line follows shortly.
    eventually(
        lambda: [
            e
            for e in _lines_with(trace_id, "order_api_*.log")
            if e.get("message") == "request_finished" and _trace(e) == trace_id
        ],
        what="order_api's request_finished line with the trace id",
    )

    def delivered() -> list[dict[str, Any]]:
        return [
            e
            for e in _lines_with(trace_id, "workers.log")
            if e.get("message") == "notification_sent" and _trace(e) == trace_id
        ]

    eventually(delivered, what="the worker's delivery log line with the trace id")

    def mail_with_trace() -> list[dict[str, Any]]:
        return [m for m in mails_to(http, user.email) if m.get("trace_id") == trace_id]

    # The order's own email, and the confirmation the worker's status change caused: one trace.
    mails = eventually(lambda: len(mail_with_trace()) >= 2 and mail_with_trace(), what="both order emails")
    assert all(created.json()["id"] in mail["subject"] for mail in mails)
