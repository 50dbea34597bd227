"""The development alert receiver (notifier.alert_sink): records Alertmanager's webhook payloads,
lists them, survives a restart through its store file, and refuses what is not a payload."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from notifier.alert_sink import create_app

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def payload(alertname: str = "ServiceDown", status: str = "firing", **labels: str) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4), as it sends it."""
    alert_labels = {"alertname": alertname, "severity": "critical", "job": "workers", **labels}
    return {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="' + alertname + '"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "oncall-critical",
        "groupLabels": {"alertname": alertname},
        "commonLabels": alert_labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": alert_labels,
                "annotations": {"runbook_url": "https://runbooks.example/runbooks.md#servicedown"},
                "startsAt": "2026-12-01T08:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "c0ffee",
            }
        ],
    }


async def test_records_and_lists_each_alert(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/alerts", json=payload())
    assert (response.status, await response.json()) == (200, {"accepted": 1})
    await client.post("/alerts", json=payload("HighLatencyP95", severity="warning"))

    body = await (await client.get("/alerts")).json()
    assert body["count"] == 2
    first = body["items"][0]
    assert first["receiver"] == "oncall-critical"
    assert first["labels"] == {"alertname": "ServiceDown", "severity": "critical", "job": "workers"}
    assert first["annotations"]["runbook_url"].endswith("#servicedown")
    assert first["status"] == "firing"
    assert first["received_at"]


async def test_filters_by_alertname_and_status(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app())
    await client.post("/alerts", json=payload())
    await client.post("/alerts", json=payload(status="resolved"))
    await client.post("/alerts", json=payload("TargetMissing"))
    resolved = await (
        await client.get("/alerts", params={"alertname": "ServiceDown", "status": "resolved"})
    ).json()
    assert [(a["labels"]["alertname"], a["status"]) for a in resolved["items"]] == [
        ("ServiceDown", "resolved")
    ]
    response = await client.get("/alerts", params={"status": "pending"})
    assert response.status == 422


async def test_keeps_the_whole_payloads_and_forgets_on_delete(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app())
    await client.post("/alerts", json=payload())
    notifications = await (await client.get("/notifications")).json()
    assert notifications["items"][0]["groupLabels"] == {"alertname": "ServiceDown"}
    assert (await client.delete("/alerts")).status == 204
    assert (await (await client.get("/alerts")).json())["count"] == 0


async def test_the_store_file_outlives_a_restart(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    store = tmp_path / "alerts" / "notifications.jsonl"
    client = await aiohttp_client(create_app(store))
    await client.post("/alerts", json=payload())
    assert json.loads(store.read_text().splitlines()[0])["alerts"][0]["labels"]["job"] == "workers"

    restarted = await aiohttp_client(create_app(store))
    assert (await (await restarted.get("/alerts")).json())["count"] == 1
    await restarted.delete("/alerts")
    assert not store.exists()


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"not json", 400, "not JSON"),
        (b"[]", 422, "JSON object"),
        (json.dumps({"receiver": "x", "alerts": []}).encode(), 422, "non-empty list"),
        (
            json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}).encode(),
            422,
            "receiver",
        ),
        (json.dumps({"receiver": "x", "alerts": [{"status": "on", "labels": {}}]}).encode(), 422, "status"),
        (
            json.dumps({"receiver": "x", "alerts": [{"status": "firing", "labels": {"a": 1}}]}).encode(),
            422,
            "labels",
        ),
        (
            json.dumps({"receiver": "x", "alerts": [{"status": "firing", "labels": {}}]}).encode(),
            422,
            "alertname",
        ),
    ],
)
async def test_refuses_what_is_not_a_webhook_payload(
    aiohttp_client: ClientFactory, body: bytes, status: int, detail: str
) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/alerts", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    assert response.content_type == "application/problem+json"
    assert detail in (await response.json())["detail"]
    assert (await (await client.get("/alerts")).json())["count"] == 0


async def test_health(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app())
    assert (await (await client.get("/health")).json())["status"] == "UP"
