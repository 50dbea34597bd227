"""user_api configuration, read once from the environment."""

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
    user_api_port: int = Field(default=8081, ge=1, le=65535)
    user_db_name: str = "users"
    # bcrypt cost; 12 is ~250 ms on a current core, the floor for production.
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    refresh_token_ttl_s: int = Field(default=14 * 24 * 3600, ge=300)
    user_cache_ttl_s: int = Field(default=300, ge=1, le=86_400)
    login_rate_window_s: int = Field(default=60, ge=1, le=3600)
    login_max_attempts_per_email: int = Field(default=10, ge=1)
    login_max_attempts_per_ip: int = Field(default=100, ge=1)
    # Comma-separated addresses whose X-Forwarded-For / X-Real-IP we believe (the gateway).
    trusted_proxies: str = "127.0.0.1,::1"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.user_db_name)
