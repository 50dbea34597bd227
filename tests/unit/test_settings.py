"""Settings are validated once, when read: what a service refuses to start with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.pagination import PageQuery
from notifier.settings import NotifierSettings
from order_api.settings import Settings as OrderSettings
from workers.settings import WorkerSettings


def test_several_user_service_urls_are_kept_in_order_without_blanks() -> None:
    settings = OrderSettings(user_service_url=" http://a:8081 , ,https://b:8091/ ")
    assert settings.user_service_url == "http://a:8081,https://b:8091/"


@pytest.mark.parametrize("urls", ["", " , ", "ftp://a", "http://", "a:8081"])
def test_a_user_service_url_must_be_http(urls: str) -> None:
    with pytest.raises(ValidationError):
        OrderSettings(user_service_url=urls)


@pytest.mark.parametrize("secret", ["guest", "postgres", "change-me", ""])
def test_production_refuses_an_example_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="example value"):
        OrderSettings(
            app_env="production", db_password=secret, redis_password="r3al-redis", rabbitmq_password="r3al-mq"
        )


def test_production_starts_with_real_secrets_and_development_with_examples() -> None:
    assert OrderSettings(
        app_env="production", db_password="r3al-db", redis_password="r3al-redis", rabbitmq_password="r3al-mq"
    ).is_production
    assert not OrderSettings(app_env="development", db_password="postgres").is_production


def test_staging_counts_as_production() -> None:
    with pytest.raises(ValidationError):
        OrderSettings(app_env="staging", db_password="postgres")


def test_the_delivery_lease_must_outlive_the_longest_send() -> None:
    with pytest.raises(ValidationError, match="DELIVERY_LEASE_S"):
        WorkerSettings(delivery_lease_s=10, smtp_timeout_s=10)
    assert (
        WorkerSettings(delivery_lease_s=11, smtp_timeout_s=10, provider_timeout_s=10).delivery_lease_s == 11
    )


def test_a_dsn_quotes_what_a_url_cannot_carry() -> None:
    settings = NotifierSettings(db_username="app user", db_password="p@ss/word", notification_db_name="n")
    assert settings.dsn.startswith("postgresql://app%20user:p%40ss%2Fword@")
    assert "/n?sslmode=" in settings.dsn


def test_an_unknown_environment_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        OrderSettings(app_env="prod")


# --- pagination ------------------------------------------------------------------------------


def test_a_page_is_twenty_from_the_start_by_default() -> None:
    assert PageQuery().model_dump() == {"limit": 20, "offset": 0}


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (101, 0), (20, -1), (20, 1_000_001)])
def test_page_bounds(limit: int, offset: int) -> None:
    with pytest.raises(ValidationError):
        PageQuery(limit=limit, offset=offset)


def test_page_bounds_are_inclusive() -> None:
    assert PageQuery(limit=100, offset=1_000_000).limit == 100
    assert PageQuery(limit=1).limit == 1


def test_a_page_query_refuses_unknown_parameters() -> None:
    with pytest.raises(ValidationError):
        PageQuery.model_validate({"limit": 5, "page": 2})
