"""Settings read from the environment once, validated, then passed around explicitly.

Every service composes its own ``Settings`` class from the mixins here so that the
variable names (``DB_HOST``, ``REDIS_PORT`` …) are spelled once and mean the same thing
everywhere. A missing or malformed variable stops start-up with ``SettingsError`` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ServiceError

# Values shipped in .env.example. Production refuses to start with any of them, so a
# copied example file can never become a live deployment by accident.
EXAMPLE_SECRETS = frozenset(
    {"postgres", "guest", "admin123", "secure_password", "change-me", "changeme", "password", "secret"}
)


class SettingsError(ServiceError, RuntimeError):
    """The environment does not describe a runnable service."""


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)

    app_env: Literal["development", "test", "staging", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http_host: str = "127.0.0.1"
    # Fixed JSON logs or human-friendly console lines; ECS JSON is what Logstash expects.
    log_format: Literal["json", "console"] = "json"
    # SIGTERM: readiness is 503 for this long while requests are still served (so balancers
    # notice), then the listener closes and requests in flight get up to the timeout to finish.
    shutdown_drain_s: float = Field(default=1.0, ge=0, le=60)
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Distributed tracing (common/tracing.py), OpenTelemetry's own variable names. "none" still
    # makes and propagates trace ids (logs, events, emails) but records and exports nothing.
    otel_traces_exporter: Literal["otlp", "console", "none"] = "none"
    # OTLP over HTTP: the collector's base URL; spans go to {endpoint}/v1/traces.
    otel_exporter_otlp_endpoint: str = "http://127.0.0.1:4318"
    # Share of new traces that are recorded (a trace started upstream keeps the caller's choice).
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0, le=1)

    @property
    def is_production(self) -> bool:
        return self.app_env in ("production", "staging")

    def secret_values(self) -> dict[str, str]:
        """Secrets to check against the example values: every password the mixins define.

        Subclasses extend it with their own (provider tokens, SMTP password).
        """
        return {
            name.upper(): str(getattr(self, name))
            for name in ("db_password", "rabbitmq_password", "redis_password")
            if name in type(self).model_fields
        }

    @model_validator(mode="after")
    def _refuse_example_secrets(self) -> BaseServiceSettings:
        if self.is_production:
            for name, value in self.secret_values().items():
                if not value or value.lower() in EXAMPLE_SECRETS:
                    raise ValueError(
                        f"{name} is empty or an example value from .env.example; "
                        f"set a real secret for APP_ENV={self.app_env}"
                    )
        return self


class DatabaseSettings(BaseSettings):
    db_host: str = "127.0.0.1"
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_username: str = "postgres"
    db_password: str = ""
    db_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    db_pool_min_size: int = Field(default=2, ge=0, le=100)
    db_pool_max_size: int = Field(default=10, ge=1, le=200)

    def dsn_for(self, database: str) -> str:
        auth = quote(self.db_username, safe="")
        if self.db_password:
            auth += ":" + quote(self.db_password, safe="")
        return (
            f"postgresql://{auth}@{self.db_host}:{self.db_port}/{quote(database, safe='')}"
            f"?sslmode={self.db_sslmode}"
        )


class RedisSettings(BaseSettings):
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_db: int = Field(default=0, ge=0, le=15)
    redis_password: str = ""
    # redis-py's default socket timeout is 5 s; a cache that slow is worse than none.
    redis_socket_timeout_s: float = Field(default=1.0, gt=0, le=30)


class RabbitSettings(BaseSettings):
    rabbitmq_host: str = "127.0.0.1"
    rabbitmq_port: int = Field(default=5672, ge=1, le=65535)
    rabbitmq_username: str = "guest"
    rabbitmq_password: str = "guest"  # noqa: S105 - RabbitMQ's own default, refused in production
    rabbitmq_vhost: str = "/"

    @property
    def amqp_url(self) -> str:
        user = quote(self.rabbitmq_username, safe="")
        password = quote(self.rabbitmq_password, safe="")
        vhost = quote(self.rabbitmq_vhost, safe="")
        return f"amqp://{user}:{password}@{self.rabbitmq_host}:{self.rabbitmq_port}/{vhost}"


class JwtSettings(BaseSettings):
    jwt_issuer: str = "microservices-app/user-api"
    jwt_audience: str = "microservices-app"
    jwt_public_key_file: Path = Path("var/keys/jwt_public.pem")
    jwt_private_key_file: Path = Path("var/keys/jwt_private.pem")
    # Milliseconds, as in the original seed (86400000 = 24 h). Short-lived by default:
    # refresh tokens carry the session, access tokens only prove it for a while.
    jwt_expiration: int = Field(default=900_000, ge=10_000, le=86_400_000)

    @property
    def access_token_ttl_s(self) -> int:
        return self.jwt_expiration // 1000


class OutboxSettings(BaseSettings):
    """The relay that publishes a service's outbox to RabbitMQ (common.outbox_relay)."""

    outbox_relay_enabled: bool = True
    outbox_poll_interval_s: float = Field(default=2.0, gt=0, le=300)
    outbox_batch_size: int = Field(default=100, ge=1, le=1000)
    # After a NOTIFY, wait this long before the pass, so that it takes the events committed
    # meanwhile: under load a pass per NOTIFY published one event for a claim, a mark and a
    # transaction of its own (issue 11). It delays the event, never the request that wrote it.
    outbox_linger_ms: float = Field(default=20.0, ge=0, le=1000)
    # Longest wait between attempts to reach RabbitMQ while it is down.
    outbox_max_backoff_s: float = Field(default=30.0, gt=0, le=600)


class RelaySettings(RabbitSettings, OutboxSettings):
    """A service that writes an outbox and runs its relay to RabbitMQ."""


S = TypeVar("S")  # a BaseSettings subclass; left unbound so Protocol-typed callers can pass theirs


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment (plus explicit overrides) or raise SettingsError."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{where}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def validated_base_urls(value: str) -> str:
    """A settings validator's body: every comma-separated item an http(s) base URL."""
    urls = [item.strip() for item in value.split(",") if item.strip()]
    if not urls:
        raise ValueError("name at least one base URL")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) base URL")
    return ",".join(urls)
