"""Running ``docker compose config`` on the project's compose files, as deploy.sh combines them."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.config.conftest import ROOT, require_tool

BASE = ROOT / "docker-compose.yml"
OVERRIDES = {"staging": ROOT / "docker-compose.staging.yml", "production": ROOT / "docker-compose.prod.yml"}
COMBINATIONS = {"development": [BASE], **{env: [BASE, path] for env, path in OVERRIDES.items()}}

# What a production (or staging) deployment must be given; the values are stand-ins that are
# not example values, so the services' own production checks accept them too.
DEPLOY_ENV = {
    "IMAGE_TAG": "v1.2.3",
    "DB_PASSWORD": "db-s3cret-for-tests",
    "REDIS_PASSWORD": "redis-s3cret-for-tests",
    "RABBITMQ_PASSWORD": "rabbit-s3cret-for-tests",
    "GRAFANA_ADMIN_PASSWORD": "grafana-s3cret-for-tests",
    "GATEWAY_TLS_DIR": "/srv/tls",
    "JWT_PRIVATE_KEY_FILE": "/srv/keys/jwt_private.pem",
    "JWT_PUBLIC_KEY_FILE": "/srv/keys/jwt_public.pem",
    "SMTP_HOST": "smtp.example.net",
    "SMTP_USERNAME": "mailer",
    "SMTP_PASSWORD": "smtp-s3cret-for-tests",
    "MAIL_FROM": "Shop <no-reply@shop.example.net>",
    "SMS_PROVIDER_URL": "https://sms.example.net",
    "SMS_ACCOUNT_SID": "AC0123",
    "SMS_PROVIDER_TOKEN": "sms-s3cret-for-tests",
    "SMS_FROM": "+15005550006",
    "PUSH_PROVIDER_URL": "https://push.example.net",
    "PUSH_PROJECT_ID": "shop",
    "PUSH_PROVIDER_TOKEN": "push-s3cret-for-tests",
    "ALERT_WEBHOOK_URL": "https://relay.example.net/alertmanager",
}

# Services that run once and exit; everything else runs for good.
ONE_SHOTS = {"gateway-config", "kibana-setup", "alertmanager-config", "elasticsearch-setup"}
APP_SERVICES = {
    "user-service",
    "order-service",
    "notification-service",
    "workers",
    "fake-provider",
    "gateway-config",
    "alertmanager-config",
    "alert-sink",
}


def compose_files(env_name: str) -> list[Path]:
    return COMBINATIONS[env_name]


def run_config(
    files: list[Path], env: dict[str, str], *extra: str, tmp_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    compose = require_tool("docker-compose")
    # An empty --env-file: a developer's own .env must not change what the test sees.
    args = [compose, "--env-file", "/dev/null", "--project-directory", str(ROOT)]
    for path in files:
        args += ["-f", str(path)]
    clean_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path or ROOT), **env}
    return subprocess.run(
        [*args, "config", *extra],
        cwd=ROOT,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@functools.cache
def merged(env_name: str) -> dict[str, Any]:
    """The combination as compose resolves it (cached: compose is deterministic; do not mutate)."""
    env = {} if env_name == "development" else DEPLOY_ENV
    result = run_config(compose_files(env_name), env, "--format", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _without_comments(path: Path) -> str:
    return re.sub(r"(^|\s)#.*$", "", path.read_text(), flags=re.MULTILINE)


def interpolated_variables(path: Path) -> set[str]:
    """Every variable a compose file interpolates (${VAR}, ${VAR:-default}, ${VAR:?message})."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", _without_comments(path)))


def required_variables(path: Path) -> set[str]:
    """The variables without which compose refuses the file (${VAR:?message})."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?\?", _without_comments(path)))
