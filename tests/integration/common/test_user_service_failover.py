"""Reaching user_api through several instances: balance, fail over, trip per service.

order_api's user client and the notifier's user directory share the mechanism
(common/failover.py). Real HTTP servers on free ports stand in for the instances; one is stopped,
made to hang or to answer 5xx, and a call must still succeed through the other, without tripping
order_api's breaker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from common.breaker import Breaker, BreakerState
from common.errors import DependencyUnavailable
from common.failover import split_base_urls
from common.logging import configure_logging
from notifier.settings import NotifierSettings
from notifier.users import UserDirectory
from order_api.settings import Settings
from order_api.users_client import UsersClient
from tests.net import free_port

USER_ID = "4f1c7a52-8d7e-4c1e-9a7e-3d2f5e6a7b8c"


class Instance:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls = 0
        self.delay_s = 0.0
        self.status = 200
        self._runner: web.AppRunner | None = None

    async def _get_user(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.json_response({"title": "failing"}, status=self.status)
        return web.json_response(
            {
                "id": request.match_info["id"],
                "email": "ada@example.com",
                "name": "Ada Lovelace",
                "phone": None,
                "role": "user",
                "notification_preferences": {"email": True, "sms": False, "push": False},
                "push_token": None,
                "created_at": "2026-11-25T19:00:00.000Z",
                "updated_at": "2026-11-25T19:00:00.000Z",
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/users/{id}", self._get_user)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def instances() -> AsyncIterator[list[Instance]]:
    started = [Instance(), Instance()]
    for instance in started:
        await instance.start()
    yield started
    for instance in started:
        await instance.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def _client(session: aiohttp.ClientSession, urls: list[str], breaker: Breaker) -> UsersClient:
    return UsersClient(session, urls, breaker, timeout_s=1.0, max_retries=2, retry_backoff_s=0.01)


async def _validate_many(client: UsersClient, count: int) -> None:
    for _ in range(count):
        contact = await client.fetch_contact(USER_ID, "token")
        assert contact is not None


async def test_calls_are_spread_over_the_instances(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    client = _client(session, [i.url for i in instances], Breaker("t_spread", fail_max=2))
    await _validate_many(client, 10)
    assert [i.calls for i in instances] == [5, 5]


async def test_a_stopped_instance_costs_no_validation_and_no_breaker_trip(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    breaker = Breaker("t_stopped", fail_max=2)
    client = _client(session, [i.url for i in instances], breaker)
    await instances[0].stop()
    await _validate_many(client, 20)
    assert breaker.state is BreakerState.CLOSED
    # Passed over during its cool-off: the dead instance is not tried on every call.
    assert instances[1].calls == 20


async def test_a_hanging_instance_leaves_time_for_the_other(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    breaker = Breaker("t_hanging", fail_max=2)
    client = _client(session, [i.url for i in instances], breaker)
    instances[0].delay_s = 5.0
    await _validate_many(client, 6)
    assert breaker.state is BreakerState.CLOSED
    assert instances[0].calls == 1  # once, then in cool-off


async def test_5xx_from_one_instance_fails_over(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    breaker = Breaker("t_5xx", fail_max=2)
    client = _client(session, [i.url for i in instances], breaker)
    instances[1].status = 503
    await _validate_many(client, 6)
    assert breaker.state is BreakerState.CLOSED


async def test_every_instance_down_is_503_and_trips_the_breaker(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    breaker = Breaker("t_all_down", fail_max=2, reset_timeout_s=30)
    client = _client(session, [i.url for i in instances], breaker)
    for instance in instances:
        await instance.stop()
    for _ in range(2):
        with pytest.raises(DependencyUnavailable) as failed:
            await client.fetch_contact(USER_ID, "token")
        assert (failed.value.retry_after_s or 0) >= 1
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(DependencyUnavailable) as refused:
        await client.fetch_contact(USER_ID, "token")
    assert (refused.value.retry_after_s or 0) > 1


async def test_an_instance_back_from_cool_off_gets_traffic_again(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    client = UsersClient(
        session, [i.url for i in instances], Breaker("t_back"), instance_cooloff_s=0.2, retry_backoff_s=0.01
    )
    instances[0].status = 500
    await _validate_many(client, 4)
    instances[0].status = 200
    await asyncio.sleep(0.3)
    before = instances[0].calls
    await _validate_many(client, 4)
    assert instances[0].calls > before


def test_base_urls_are_split_and_validated() -> None:
    assert split_base_urls(" http://a:1/, http://b:2 ") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="at least one"):
        split_base_urls(" , ")
    settings: Any = Settings(user_service_url="http://a:1, http://b:2/")
    assert settings.user_service_url == "http://a:1,http://b:2/"
    with pytest.raises(ValueError, match="not an http"):
        Settings(user_service_url="http://a:1,ftp://b")
    notifier: Any = NotifierSettings(user_service_url=" http://a:1 ,http://b:2")
    assert notifier.user_service_url == "http://a:1,http://b:2"
    with pytest.raises(ValueError, match="not an http"):
        NotifierSettings(user_service_url="http://a:1,b:2")


def test_both_services_list_both_local_instances_by_default() -> None:
    expected = "http://127.0.0.1:8081,http://127.0.0.1:8091"
    assert Settings.model_fields["user_service_url"].default == expected
    assert NotifierSettings.model_fields["user_service_url"].default == expected


def _directory(session: aiohttp.ClientSession, instances: list[Instance]) -> UserDirectory:
    return UserDirectory(session, [i.url for i in instances], timeout_s=1.0)


async def test_the_notifier_finds_the_user_with_one_instance_stopped(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    directory = _directory(session, instances)
    await instances[0].stop()
    for _ in range(6):
        user = await directory.get(USER_ID, "token")
        assert user is not None
        assert user["email"] == "ada@example.com"
    assert instances[1].calls == 6


async def test_the_notifier_fails_over_from_a_hanging_or_failing_instance(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    directory = _directory(session, instances)
    instances[0].delay_s = 5.0
    instances[1].status = 200
    assert await directory.get(USER_ID, "token") is not None
    instances[0].delay_s = 0.0
    instances[1].status = 502
    for _ in range(4):
        assert await directory.get(USER_ID, "token") is not None


async def test_the_notifier_spreads_lookups_over_the_instances(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    directory = _directory(session, instances)
    for _ in range(8):
        assert await directory.get(USER_ID, "token") is not None
    assert [i.calls for i in instances] == [4, 4]


async def test_the_notifier_with_every_instance_down_is_503(
    session: aiohttp.ClientSession, instances: list[Instance]
) -> None:
    directory = _directory(session, instances)
    for instance in instances:
        await instance.stop()
    with pytest.raises(DependencyUnavailable) as failed:
        await directory.get(USER_ID, "token")
    assert failed.value.status == 503
    # The instances' addresses stay in the log.
    assert "127.0.0.1" not in str(failed.value)


async def test_an_instance_failing_logs_cleanly_in_the_services_json_format(
    session: aiohttp.ClientSession, instances: list[Instance], capsys: pytest.CaptureFixture[str]
) -> None:
    # ECS logging owns service.name: a field named "service" beside it made every failover a 500.
    saved = structlog.get_config()
    configure_logging("order_api", fmt="json")
    try:
        client = _client(session, [i.url for i in instances], Breaker("t_logs", fail_max=5))
        await instances[0].stop()
        await _validate_many(client, 2)
    finally:
        structlog.configure(**saved)
    failed = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "upstream_instance" in line
    ]
    assert failed
    assert failed[0]["service"]["name"] == "order_api"
    assert failed[0]["upstream"] == "user_api"
