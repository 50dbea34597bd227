"""order_api configuration, read once from the environment."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

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

    # Every user_api instance, comma-separated: order_api balances over them and fails over
    # (host mode runs two). In compose one name resolves to every replica.
    user_service_url: str = "http://127.0.0.1:8081,http://127.0.0.1:8091"
    # The whole budget of one user validation, retries included: the caller is waiting.
    user_service_timeout_s: float = Field(default=1.0, gt=0, le=30)
    user_service_max_retries: int = Field(default=2, ge=0, le=5)
    user_service_retry_backoff_s: float = Field(default=0.05, ge=0, le=5)
    # How long an instance that failed is passed over before it gets traffic again.
    user_service_instance_cooloff_s: float = Field(default=2.0, gt=0, le=300)
    user_service_breaker_fail_max: int = Field(default=5, ge=1, le=1000)
    user_service_breaker_reset_s: float = Field(default=10.0, gt=0, le=3600)
    # Contacts found are kept this long in each instance (0 turns the cache off), up to this
    # many users; user_api's user.changed messages drop an entry at once (contact_cache.py).
    user_contact_cache_ttl_s: float = Field(default=30.0, ge=0, le=3600)
    user_contact_cache_size: int = Field(default=10_000, ge=1, le=1_000_000)

    idempotency_key_ttl_s: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    idempotency_purge_interval_s: float = Field(default=3600.0, gt=0)

    @field_validator("user_service_url")
    @classmethod
    def _each_url_is_http(cls, value: str) -> str:
        urls = [item.strip() for item in value.split(",") if item.strip()]
        if not urls:
            raise ValueError("name at least one user_api base URL")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http(s) base URL")
        return ",".join(urls)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.order_db_name)
