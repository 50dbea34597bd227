"""Channel adapters: email over SMTP, SMS and push over HTTP providers.

Each adapter sends one rendered notification and returns the provider's message id, or raises
``TransientFailure`` (worth retrying: timeouts, SMTP 4xx, provider 5xx/429) or
``PermanentFailure`` (retrying cannot help: SMTP 5xx, provider 4xx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from common.errors import ServiceError
from notifier.templates import Rendered

# The longest Retry-After we honour; beyond it the regular backoff applies.
MAX_RETRY_AFTER_S = 600.0


class DeliveryFailure(ServiceError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail[:1000]


class TransientFailure(DeliveryFailure):
    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = (
            None if retry_after_s is None else min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        )


class PermanentFailure(DeliveryFailure):
    pass


@dataclass(frozen=True)
class Outgoing:
    notification_id: str
    recipient: str
    recipient_name: str | None
    trace_id: str | None
    content: Rendered


class Sender(Protocol):
    async def send(self, outgoing: Outgoing) -> str | None:
        """Hand the message to the provider; its message id if it returns one."""
        ...


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
