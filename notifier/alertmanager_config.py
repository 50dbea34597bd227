"""Alertmanager's configuration, rendered from the environment (Alertmanager cannot read it).

``python -m notifier.alertmanager_config --out var/alertmanager/alertmanager.yml``

Alerts are routed by ``severity``: ``critical`` (act now) to the on-call receiver, which pages
(PagerDuty, when a routing key is set) and also notifies like ``warning``; ``warning`` (act today)
to e-mail and chat. Each receiver sends to whatever is configured of:

- e-mail through the SMTP server the notifications use (``SMTP_*``) to ``ALERT_EMAIL_TO``;
- a generic webhook (``ALERT_WEBHOOK_URL``: Alertmanager's JSON, what most relays accept);
- Slack (``ALERT_SLACK_WEBHOOK_URL``) and PagerDuty Events v2 (``ALERT_PAGERDUTY_ROUTING_KEY``);
- in development and test, the local receiver (``ALERT_SINK_URL``, ``python -m notifier.alert_sink``).

Inhibition: a service that is down (``ServiceDown``, ``TargetMissing``) silences that service's
latency alerts, which only restate it; a critical alert silences the warning of the same name
and service (a fast error-budget burn and its slow twin).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from common.settings import BaseServiceSettings, SettingsError, load_settings
from notifier.settings import DeliverySettings

CRITICAL = "oncall-critical"
WARNING = "oncall-warning"
DOWN_ALERTS = ("ServiceDown", "TargetMissing")
LATENCY_ALERTS = ("HighLatencyP95", "OrderCreationLatencyBudgetBurn", "LoginLatencyBudgetBurn")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")

# One line per alert in chat: what, where, and where to read what to do.
SLACK_TITLE = "".join(
    [
        "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
        "{{ with .CommonLabels.service }} ({{ . }}){{ end }}",
    ]
)
SLACK_TEXT = (
    "{{ range .Alerts }}*{{ .Labels.severity }}* {{ .Annotations.summary }}\n"
    "{{ .Annotations.description }}\nRunbook: {{ .Annotations.runbook_url }}\n{{ end }}"
)


class AlertingSettings(BaseServiceSettings, DeliverySettings):
    alert_email_to: str = ""  # comma-separated; empty: no e-mail
    alert_email_from: str = ""  # empty: MAIL_FROM
    alert_webhook_url: str = ""
    alert_slack_webhook_url: str = ""
    alert_pagerduty_routing_key: str = ""
    # The development receiver; ignored in staging and production.
    alert_sink_url: str = "http://127.0.0.1:9095/alerts"
    alert_group_wait: str = "30s"
    alert_critical_group_wait: str = "5s"
    alert_group_interval: str = "5m"
    # A new alert joining a critical group that was already notified waits this long.
    alert_critical_group_interval: str = "1m"
    alert_repeat_interval: str = "4h"
    alert_critical_repeat_interval: str = "1h"
    alertmanager_resolve_timeout: str = Field(default="5m")

    @field_validator(
        "alert_group_wait",
        "alert_critical_group_wait",
        "alert_group_interval",
        "alert_critical_group_interval",
        "alert_repeat_interval",
        "alert_critical_repeat_interval",
        "alertmanager_resolve_timeout",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 4h")
        return value

    @field_validator("alert_webhook_url", "alert_slack_webhook_url", "alert_sink_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> AlertingSettings:
        if self.smtp_use_tls and self.alert_email_to and self.smtp_port != 465:
            # Alertmanager speaks implicit TLS only on port 465 (STARTTLS elsewhere).
            raise ValueError("SMTP_USE_TLS: Alertmanager uses implicit TLS on port 465 only")
        if self.is_production and not (
            self.alert_email_to
            or self.alert_webhook_url
            or self.alert_slack_webhook_url
            or self.alert_pagerduty_routing_key
        ):
            raise ValueError(
                f"APP_ENV={self.app_env} needs somewhere to send alerts: set ALERT_EMAIL_TO, "
                "ALERT_WEBHOOK_URL, ALERT_SLACK_WEBHOOK_URL or ALERT_PAGERDUTY_ROUTING_KEY"
            )
        for address in self.email_recipients:
            if "@" not in parseaddr(address)[1]:
                raise ValueError(f"ALERT_EMAIL_TO: {address!r} is not an e-mail address")
        return self

    def secret_values(self) -> dict[str, str]:
        return {"SMTP_PASSWORD": self.smtp_password} if self.smtp_username and self.alert_email_to else {}

    @property
    def email_recipients(self) -> list[str]:
        return [part.strip() for part in self.alert_email_to.split(",") if part.strip()]

    @property
    def uses_sink(self) -> bool:
        return not self.is_production and bool(self.alert_sink_url)


def _email(settings: AlertingSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "to": ", ".join(settings.email_recipients),
        "from": settings.alert_email_from or settings.mail_from,
        "smarthost": f"{settings.smtp_host}:{settings.smtp_port}",
        "hello": settings.message_id_domain,
        # STARTTLS when asked; implicit TLS is port 465 (checked above).
        "require_tls": settings.smtp_starttls,
        "send_resolved": True,
        "headers": {
            "Subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} {{ .CommonLabels.service }}"
        },
    }
    if settings.smtp_starttls or settings.smtp_use_tls:
        config["tls_config"] = {"insecure_skip_verify": not settings.smtp_validate_certs}
    if settings.smtp_username:
        config["auth_username"] = settings.smtp_username
        config["auth_password"] = settings.smtp_password
    return config


def _receiver(name: str, settings: AlertingSettings, *, page: bool) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    webhooks = []
    if settings.alert_webhook_url:
        webhooks.append({"url": settings.alert_webhook_url, "send_resolved": True})
    if settings.uses_sink:
        webhooks.append({"url": settings.alert_sink_url, "send_resolved": True})
    if webhooks:
        receiver["webhook_configs"] = webhooks
    if settings.email_recipients:
        receiver["email_configs"] = [_email(settings)]
    if settings.alert_slack_webhook_url:
        receiver["slack_configs"] = [
            {
                "api_url": settings.alert_slack_webhook_url,
                "send_resolved": True,
                "title": SLACK_TITLE,
                "text": SLACK_TEXT,
            }
        ]
    if page and settings.alert_pagerduty_routing_key:
        receiver["pagerduty_configs"] = [
            {
                "routing_key": settings.alert_pagerduty_routing_key,
                "send_resolved": True,
                "description": "{{ .CommonLabels.alertname }}: {{ .CommonAnnotations.summary }}",
                "links": [{"href": "{{ (index .Alerts 0).Annotations.runbook_url }}", "text": "Runbook"}],
            }
        ]
    return receiver


def render(settings: AlertingSettings) -> dict[str, Any]:
    """Alertmanager's configuration as a mapping (yaml.safe_dump it)."""
    return {
        "global": {"resolve_timeout": settings.alertmanager_resolve_timeout},
        "route": {
            # Unknown severities land with the warnings: every alert reaches someone.
            "receiver": WARNING,
            # vhost: one broker may serve several deployments (a development machine's checkouts).
            "group_by": ["alertname", "service", "vhost"],
            "group_wait": settings.alert_group_wait,
            "group_interval": settings.alert_group_interval,
            "repeat_interval": settings.alert_repeat_interval,
            "routes": [
                {
                    "receiver": CRITICAL,
                    "matchers": ['severity="critical"'],
                    "group_wait": settings.alert_critical_group_wait,
                    "group_interval": settings.alert_critical_group_interval,
                    "repeat_interval": settings.alert_critical_repeat_interval,
                },
                {"receiver": WARNING, "matchers": ['severity="warning"']},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname=~"{"|".join(DOWN_ALERTS)}"'],
                "target_matchers": [f'alertname=~"{"|".join(LATENCY_ALERTS)}"'],
                "equal": ["service"],
            },
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "service"],
            },
        ],
        "receivers": [
            _receiver(CRITICAL, settings, page=True),
            _receiver(WARNING, settings, page=False),
        ],
    }


def write(settings: AlertingSettings, path: Path, owner: tuple[int, int] | None = None) -> None:
    """Write the file, readable by its owner only (it may hold the SMTP password and webhook
    secrets); ``owner`` hands it to another user (compose: the renderer runs as root, Alertmanager
    as nobody)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    if owner is not None:
        os.fchown(descriptor, *owner)
    with os.fdopen(descriptor, "w") as file:
        file.write(
            "# Rendered by python -m notifier.alertmanager_config; edit the environment, not this file.\n"
        )
        yaml.safe_dump(render(settings), file, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notifier.alertmanager_config", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write alertmanager.yml")
    parser.add_argument("--owner", type=_owner, default=None, help="UID:GID to give the file to")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(AlertingSettings)
    except SettingsError as exc:
        print(f"alertmanager config: {exc}", file=sys.stderr)
        return 2
    write(settings, args.out, args.owner)
    return 0


def _owner(value: str) -> tuple[int, int]:
    uid, _, gid = value.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise argparse.ArgumentTypeError(f"{value!r} is not UID:GID")
    return int(uid), int(gid)


if __name__ == "__main__":
    sys.exit(main())
