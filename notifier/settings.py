"""Notification configuration, read once from the environment and passed in.

``NotificationSettings`` and ``DeliverySettings`` are mixins: the API composes the first, the
workers compose both, so a variable such as ``SMTP_HOST`` is spelled once.
"""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings

from common.settings import (
    BaseServiceSettings,
    DatabaseSettings,
    JwtSettings,
    RabbitSettings,
    RedisSettings,
    validated_base_urls,
)

CHANNELS = ("email", "sms", "push")


class NotificationSettings(BaseSettings):
    notification_db_name: str = "notifications"
    # Relative to the working directory; ops edit these files, workers pick edits up live.
    templates_dir: Path = Path("templates")
    # How often each rendering process looks at the folder (a stat per file; a full check only
    # when something changed).
    templates_reload_interval_s: float = Field(default=2.0, gt=0, le=300)
    # How often held notifications are offered again to a good template set, and how long a
    # release waits for its deliver message before the next sweep sends another.
    held_sweep_interval_s: float = Field(default=60.0, gt=0, le=3600)
    held_release_retry_s: float = Field(default=300.0, gt=0, le=86400)


class DeliverySettings(BaseSettings):
    # Defaults point at the local SMTP sink (python -m notifier.smtp_sink) and fake provider.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    # Implicit TLS (port 465); STARTTLS (587) is the other way to encrypt.
    smtp_use_tls: bool = False
    smtp_validate_certs: bool = True
    smtp_timeout_s: float = Field(default=30.0, gt=0, le=300)
    mail_from: str = "Microservices App <no-reply@example.com>"
    # Right-hand side of Message-ID; defaults to MAIL_FROM's domain.
    mail_message_id_domain: str = ""

    sms_provider_url: str = "http://127.0.0.1:8090"
    sms_account_sid: str = "ACdevelopment"
    sms_provider_token: str = "dev-provider-token"  # noqa: S105 - the fake provider's default
    sms_from: str = "+15005550006"
    push_provider_url: str = "http://127.0.0.1:8090"
    push_project_id: str = "microservices-app"
    push_provider_token: str = "dev-provider-token"  # noqa: S105 - the fake provider's default
    provider_timeout_s: float = Field(default=10.0, gt=0, le=120)

    # A row in `sending` whose lease has run out belongs to a worker that died mid-delivery;
    # another attempt may take it over. Must exceed the longest send (SMTP timeout) by a margin.
    delivery_lease_s: float = Field(default=120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> DeliverySettings:
        longest = max(self.smtp_timeout_s, self.provider_timeout_s)
        if self.delivery_lease_s <= longest:
            raise ValueError(
                f"DELIVERY_LEASE_S ({self.delivery_lease_s:g}) must exceed the longest send timeout "
                f"({longest:g} s), or a slow send could be taken over and sent twice"
            )
        return self

    @property
    def message_id_domain(self) -> str:
        if self.mail_message_id_domain:
            return self.mail_message_id_domain
        _, address = parseaddr(self.mail_from)
        return address.rpartition("@")[2] or "localhost"

    def delivery_secrets(self) -> dict[str, str]:
        secrets = {
            "SMS_PROVIDER_TOKEN": self.sms_provider_token,
            "PUSH_PROVIDER_TOKEN": self.push_provider_token,
        }
        if self.smtp_username:
            secrets["SMTP_PASSWORD"] = self.smtp_password
        return secrets


class NotifierSettings(
    BaseServiceSettings, DatabaseSettings, RedisSettings, RabbitSettings, JwtSettings, NotificationSettings
):
    notifier_port: int = Field(default=8083, ge=1, le=65535)
    # POST /api/notifications/send with only a user id looks the user up here: every user_api
    # instance, comma-separated, as for order_api (common/failover.py fails over between them).
    user_service_url: str = "http://127.0.0.1:8081,http://127.0.0.1:8091"
    user_service_timeout_s: float = Field(default=3.0, gt=0, le=30)

    @field_validator("user_service_url")
    @classmethod
    def _each_url_is_http(cls, value: str) -> str:
        return validated_base_urls(value)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.notification_db_name)
