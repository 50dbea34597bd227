"""Worker settings: safe defaults, and refusals that keep a bad configuration from starting."""

from __future__ import annotations

import pytest

from common.settings import SettingsError, load_settings
from workers.broker import broker_url, build_broker
from workers.settings import WorkerSettings

PRODUCTION = {"app_env": "production", "db_password": "s3cret-db", "rabbitmq_password": "s3cret-mq"}


def test_production_refuses_the_fake_providers_development_token() -> None:
    with pytest.raises(SettingsError, match="SMS_PROVIDER_TOKEN"):
        load_settings(WorkerSettings, **PRODUCTION)


def test_production_refuses_an_smtp_login_without_password() -> None:
    tokens = {"sms_provider_token": "real-sms", "push_provider_token": "real-push"}
    assert load_settings(WorkerSettings, **PRODUCTION, **tokens).is_production
    with pytest.raises(SettingsError, match="SMTP_PASSWORD"):
        load_settings(WorkerSettings, **PRODUCTION, **tokens, smtp_username="mailer")


def test_the_lease_must_outlive_the_longest_send() -> None:
    with pytest.raises(SettingsError, match="DELIVERY_LEASE_S"):
        load_settings(WorkerSettings, smtp_timeout_s=60, delivery_lease_s=30)


def test_backoff_is_capped_at_ten_minutes() -> None:
    with pytest.raises(SettingsError, match="WORKER_MAX_BACKOFF_MS"):
        load_settings(WorkerSettings, worker_max_backoff_ms=600_001)


def test_the_broker_confirms_publishes_and_keeps_heartbeats() -> None:
    settings = load_settings(WorkerSettings, rabbitmq_vhost="v", rabbitmq_heartbeat_s=15)
    broker = build_broker(settings)
    assert broker.confirm_delivery
    assert broker_url(settings).startswith("amqp://guest:guest@127.0.0.1:5672/v?heartbeat=15")
    names = [type(m).__name__ for m in broker.middleware]
    # after_* hooks run in reverse: RetriesExhausted must see Retries' verdict, and the worker's
    # resources must close before AsyncIO stops the loop they live on.
    assert names.index("RetriesExhausted") < names.index("Retries")
    assert names.index("AsyncIO") < names.index("WorkerResources")
