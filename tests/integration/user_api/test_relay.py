"""user.registered leaves user_api through the same outbox relay as the order events."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.order_api.broker_tools import QueueReader
from tests.integration.user_api.conftest import PASSWORD, SPEC, unique_email
from tests.openapi_check import CheckedClient
from user_api.app import create_app
from user_api.settings import Settings


async def test_registration_reaches_the_notifications_queue_as_a_dramatiq_message(
    aiohttp_client: Any, settings: Settings, rabbitmq_vhost: str
) -> None:
    reader = QueueReader(rabbitmq_vhost, queues=("notifications",))
    await reader.open()
    try:
        relayed = settings.model_copy(update={"outbox_relay_enabled": True, "rabbitmq_vhost": rabbitmq_vhost})
        client = CheckedClient(await aiohttp_client(create_app(relayed)), SPEC)
        response = await client.post(
            "/api/auth/register", json={"email": unique_email(), "password": PASSWORD, "name": "Welcome Me"}
        )
        user = await response.json()

        # Other tests leave their outbox rows unpublished; this relay sends those too.
        def mine() -> list[Any]:
            return [
                m for m in reader.messages["notifications"] if m.args[0]["data"]["user"]["id"] == user["id"]
            ]

        for _ in range(100):
            await reader.drain()
            if mine():
                break
            await asyncio.sleep(0.1)
        [message] = mine()
        assert message.actor_name == "notifications.fanout"
        event = message.args[0]
        assert event["event_type"] == "user.registered"
        assert event["data"]["user"]["id"] == user["id"]
        assert event["trace_id"] == response.headers["X-Request-ID"]
    finally:
        await reader.close()
