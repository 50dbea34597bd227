"""Worker configuration, read once when the broker is built (see ``workers.broker``)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from common.settings import BaseServiceSettings, DatabaseSettings, RabbitSettings
from notifier.settings import DeliverySettings, NotificationSettings

# Retries back off exponentially with jitter, never longer than this between two attempts.
MAX_BACKOFF_CEILING_MS = 600_000


class WorkerSettings(
    BaseServiceSettings, DatabaseSettings, RabbitSettings, NotificationSettings, DeliverySettings
):
    order_db_name: str = "orders"
    # Orders above this total are rejected by orders.process (same currency units as the order).
    max_order_total: Decimal = Field(default=Decimal("10000"), gt=0)
    # orders.process marks the status changes it handed on in one statement per window this long
    # (common.outbox.HandedOnMarks): one per order was a round trip each (issue 11).
    handed_on_linger_ms: float = Field(default=50.0, ge=0, le=1000)

    # 8 retries from 5 s doubling, capped at 10 min: the last try is ~20 minutes after the first.
    worker_max_retries: int = Field(default=8, ge=0, le=50)
    worker_min_backoff_ms: int = Field(default=5_000, ge=10, le=MAX_BACKOFF_CEILING_MS)
    worker_max_backoff_ms: int = Field(default=MAX_BACKOFF_CEILING_MS, ge=10, le=MAX_BACKOFF_CEILING_MS)
    # Hard ceiling for one message; a send is bounded by its own timeouts well before this.
    worker_time_limit_ms: int = Field(default=300_000, ge=1_000)
    # Below the APIs' CPU priority (nice): on a shared host a request is served before the
    # backlog is worked off, which only waits (issue 11: the workers' CPU was the POST p99). In a
    # container it orders only the container's own processes.
    worker_nice: int = Field(default=10, ge=0, le=19)
    workers_metrics_enabled: bool = True
    workers_metrics_port: int = Field(default=9191, ge=1, le=65535)
    rabbitmq_heartbeat_s: int = Field(default=30, ge=0, le=600)

    def secret_values(self) -> dict[str, str]:
        secrets = super().secret_values()
        secrets.update(self.delivery_secrets())
        # The fake provider's development token must never reach a real provider.
        return {name: ("" if value.startswith("dev-") else value) for name, value in secrets.items()}
