"""The local stand-ins deploy.sh runs: the fake SMS/push provider and the SMTP sink."""

from __future__ import annotations

import asyncio
import mailbox
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from aiohttp.test_utils import TestServer

from notifier.smtp_sink import create_http_app, start_smtp
from tests.integration.notifier.conftest import PROVIDER_TOKEN, FakeProvider
from tests.integration.notifier.helpers import wait_until
from tests.net import free_port


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def test_the_fake_provider_answers_like_twilio_and_records_it(provider: FakeProvider) -> None:
    url = f"{provider.url}/2010-04-01/Accounts/AC1/Messages.json"
    auth = aiohttp.encode_basic_auth("AC1", PROVIDER_TOKEN)

    status, body = await call(
        "POST", url, data={"To": "+15005550006", "From": "+1", "Body": "hi"}, headers={"Authorization": auth}
    )
    assert status == 201
    assert body["sid"].startswith("SM")
    status, _ = await call("POST", url, data={"To": "+15005550006", "From": "+1", "Body": "hi"})
    assert status == 401
    status, _ = await call("POST", url, data={"To": "+15005550006"}, headers={"Authorization": auth})
    assert status == 400

    status, listed = await call("GET", f"{provider.url}/_fake/messages?channel=sms")
    assert [m["sid"] for m in listed["items"]] == [body["sid"]]


async def test_the_fake_provider_answers_like_fcm(provider: FakeProvider) -> None:
    url = f"{provider.url}/v1/projects/p1/messages:send"
    message = {"message": {"token": "t-123456789", "notification": {"title": "T", "body": "B"}}}

    status, body = await call(
        "POST", url, json=message, headers={"Authorization": f"Bearer {PROVIDER_TOKEN}"}
    )
    assert status == 200
    assert body["name"].startswith("projects/p1/messages/")
    status, _ = await call("POST", url, json=message, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    assert [m["title"] for m in provider.received("push")] == ["T"]


async def test_the_fake_provider_fails_on_demand_then_recovers(provider: FakeProvider) -> None:
    url = f"{provider.url}/v1/projects/p1/messages:send"
    message = {"message": {"token": "t-123456789", "notification": {"title": "T", "body": "B"}}}
    headers = {"Authorization": f"Bearer {PROVIDER_TOKEN}"}
    await provider.fail("all", status=503, count=2)

    statuses = [(await call("POST", url, json=message, headers=headers))[0] for _ in range(3)]

    assert statuses == [503, 503, 200]
    status, _ = await call("PUT", f"{provider.url}/_fake/failures/fax", json={})
    assert status == 404


@pytest.fixture
async def sink(tmp_path: Path) -> Any:
    maildir = mailbox.Maildir(tmp_path / "mail", create=True)
    port = free_port()
    smtp = await start_smtp(maildir, "127.0.0.1", port)
    http = TestServer(create_http_app(maildir), host="127.0.0.1")
    await http.start_server()
    yield port, str(http.make_url("")).rstrip("/"), tmp_path / "mail"
    smtp.close()
    await http.close()


async def test_the_smtp_sink_keeps_mail_in_a_maildir_and_lists_it(sink: Any) -> None:
    port, url, folder = sink
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "shop@example.com", "ada@example.com", "Hello"
    message["Message-ID"] = "<n-1@example.com>"
    message.set_content("plain body")
    message.add_alternative("<p>html body</p>", subtype="html")

    await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False)

    status, listed = await call("GET", f"{url}/messages")
    assert status == 200
    [item] = listed["items"]
    assert (item["subject"], item["message_id"], item["envelope_to"]) == (
        "Hello",
        "<n-1@example.com>",
        "ada@example.com",
    )
    status, detail = await call("GET", f"{url}/messages/{item['id']}")
    assert (detail["text"], detail["html"]) == ("plain body\n", "<p>html body</p>\n")
    assert len(list((folder / "new").iterdir())) == 1

    assert (await call("DELETE", f"{url}/messages"))[0] == 204
    assert (await call("GET", f"{url}/messages"))[1] == {"items": []}
    assert (await call("GET", f"{url}/messages/{item['id']}"))[0] == 404


async def test_the_smtp_sink_and_provider_start_from_the_command_line(tmp_path: Path) -> None:
    smtp_port, http_port, provider_port = free_port(), free_port(), free_port()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier.smtp_sink",
            "--port",
            str(smtp_port),
            "--http-port",
            str(http_port),
            "--maildir",
            str(tmp_path / "mail"),
        ),
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "notifier.fake_provider", "--port", str(provider_port)
        ),
    ]
    try:
        for port in (http_port, provider_port):

            async def healthy(port: int = port) -> bool:
                try:
                    return (await call("GET", f"http://127.0.0.1:{port}/health"))[1]["status"] == "UP"
                except aiohttp.ClientError:
                    return False

            assert await wait_until(healthy, timeout_s=10)
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
            await process.wait()
