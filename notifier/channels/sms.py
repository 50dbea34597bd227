"""SMS through a Twilio-shaped API: form POST to /2010-04-01/Accounts/{sid}/Messages.json."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from notifier.channels import Outgoing
from notifier.channels.http import post
from notifier.settings import DeliverySettings


class SmsSender:
    def __init__(self, session: aiohttp.ClientSession, settings: DeliverySettings) -> None:
        self._session = session
        self._settings = settings
        sid = quote(settings.sms_account_sid, safe="")
        self._url = f"{settings.sms_provider_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        self._authorization = aiohttp.encode_basic_auth(settings.sms_account_sid, settings.sms_provider_token)

    async def send(self, outgoing: Outgoing) -> str | None:
        answer = await post(
            self._session,
            "SMS provider",
            self._url,
            form={
                "To": outgoing.recipient,
                "From": self._settings.sms_from,
                "Body": outgoing.content.parts["text"],
            },
            # Providers that support it deduplicate on this key; Twilio ignores it harmlessly.
            headers={
                "Authorization": self._authorization,
                "Idempotency-Key": outgoing.notification_id,
                "X-Trace-Id": outgoing.trace_id or "",
            },
            timeout_s=self._settings.provider_timeout_s,
        )
        sid = answer.get("sid")
        return str(sid) if sid else None
