"""order_api configuration, read once from the environment."""

from __future__ import annotations

from pydantic import Field

from common.settings import (
    BaseServiceSettings,
    DatabaseSettings,
    JwtSettings,
    RedisSettings,
    RelaySettings,
)


class Settings(BaseServiceSettings, DatabaseSettings, RedisSettings, RelaySettings, JwtSettings):
    order_api_port: int = Field(default=8082, ge=1, le=65535)
    order_db_name: str = "orders"

    user_service_url: str = "http://127.0.0.1:8081"
    # The whole budget of one user validation, retries included: the caller is waiting.
    user_service_timeout_s: float = Field(default=1.0, gt=0, le=30)
    user_service_max_retries: int = Field(default=2, ge=0, le=5)
    user_service_retry_backoff_s: float = Field(default=0.05, ge=0, le=5)
    user_service_breaker_fail_max: int = Field(default=5, ge=1, le=1000)
    user_service_breaker_reset_s: float = Field(default=10.0, gt=0, le=3600)

    idempotency_key_ttl_s: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    idempotency_purge_interval_s: float = Field(default=3600.0, gt=0)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.order_db_name)
