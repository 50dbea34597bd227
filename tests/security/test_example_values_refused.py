""".env.example's secrets are refused in production by every service's settings, one by one.

The example file is read as it is committed: a value added or changed there is checked here
without editing this test. Each service starts from a production environment whose secrets are
real (and loads), then gets one example value back: that alone must stop it, naming the variable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from common.settings import SettingsError, load_settings
from notifier.settings import NotifierSettings
from order_api.settings import Settings as OrderSettings
from user_api.settings import Settings as UserSettings
from workers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES: dict[str, type[BaseSettings]] = {
    "user_api": UserSettings,
    "order_api": OrderSettings,
    "notifier": NotifierSettings,
    "workers": WorkerSettings,
}
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET)$")
# Example values a service still accepts in production, each with its reason (none today).
NOT_REFUSED_YET: dict[str, str] = {}


def example_values() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def reads(settings: type[BaseSettings], variable: str) -> bool:
    return variable.lower() in settings.model_fields


def secrets_read_by(settings: type[BaseSettings]) -> list[str]:
    return [name for name in example_values() if SECRET_NAME.search(name) and reads(settings, name)]


def real_production(settings: type[BaseSettings]) -> dict[str, str]:
    env = {"APP_ENV": "production"}
    env.update({name: f"{name.lower().replace('_', '-')}-7f3a9c21e8" for name in secrets_read_by(settings)})
    if reads(settings, "SMTP_USERNAME"):
        env["SMTP_USERNAME"] = "mailer"  # so that SMTP_PASSWORD is one that counts
    return env


def load(monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings], env: dict[str, str]) -> BaseSettings:
    # Only what the test says: nothing from the shell or CI that runs it.
    for field in settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(settings)


def cases() -> list[object]:
    params = []
    for service, settings in SERVICES.items():
        for variable in secrets_read_by(settings):
            marks = []
            if variable in NOT_REFUSED_YET:
                # strict: once the services refuse it, this case passes and the mark must go.
                reason = NOT_REFUSED_YET[variable]
                marks.append(pytest.mark.xfail(reason=reason, strict=True, raises=pytest.fail.Exception))
            params.append(pytest.param(settings, variable, id=f"{service}-{variable}", marks=marks))
    return params


@pytest.mark.parametrize("settings", SERVICES.values(), ids=SERVICES.keys())
def test_production_with_real_secrets_loads(
    monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings]
) -> None:
    assert secrets_read_by(settings), "no secret of .env.example is read: the cases below would be empty"
    loaded = load(monkeypatch, settings, real_production(settings))
    assert getattr(loaded, "is_production", False)


@pytest.mark.parametrize(("settings", "variable"), cases())
def test_one_example_value_is_enough_to_be_refused(
    monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings], variable: str
) -> None:
    env = {**real_production(settings), variable: example_values()[variable]}
    with pytest.raises(SettingsError, match=variable):
        load(monkeypatch, settings, env)


@pytest.mark.parametrize("settings", SERVICES.values(), ids=SERVICES.keys())
def test_the_example_file_as_it_is_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings]
) -> None:
    names = {field.upper() for field in settings.model_fields}
    env = {name: value for name, value in example_values().items() if name in names}
    with pytest.raises(SettingsError, match="example value"):
        load(monkeypatch, settings, {**env, "APP_ENV": "production"})


def test_every_service_is_covered_for_the_secrets_it_reads() -> None:
    covered = {(s, v) for s, settings in SERVICES.items() for v in secrets_read_by(settings)}
    assert {("user_api", "DB_PASSWORD"), ("order_api", "RABBITMQ_PASSWORD")} <= covered
    assert {v for s, v in covered if s == "workers"} >= {
        "SMS_PROVIDER_TOKEN",
        "PUSH_PROVIDER_TOKEN",
        "SMTP_PASSWORD",
    }
