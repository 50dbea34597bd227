"""Push through an FCM-shaped API: JSON POST to /v1/projects/{project}/messages:send."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from notifier.channels import Outgoing
from notifier.channels.http import post
from notifier.settings import DeliverySettings


class PushSender:
    def __init__(self, session: aiohttp.ClientSession, settings: DeliverySettings) -> None:
        self._session = session
        self._settings = settings
        project = quote(settings.push_project_id, safe="")
        self._url = f"{settings.push_provider_url.rstrip('/')}/v1/projects/{project}/messages:send"

    async def send(self, outgoing: Outgoing) -> str | None:
        parts = outgoing.content.parts
        body = {
            "message": {
                "token": outgoing.recipient,
                "notification": {"title": parts["title"], "body": parts["body"]},
                "data": {"notification_id": outgoing.notification_id, "trace_id": outgoing.trace_id or ""},
            }
        }
        answer = await post(
            self._session,
            "push provider",
            self._url,
            json_body=body,
            headers={
                "Authorization": f"Bearer {self._settings.push_provider_token}",
                "Idempotency-Key": outgoing.notification_id,
            },
            timeout_s=self._settings.provider_timeout_s,
        )
        name = answer.get("name")
        return str(name) if name else None
