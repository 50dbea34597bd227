"""What a service process imports on its way to serving (issue 11: every module is memory).

Each check runs a fresh interpreter that goes the real way to serving with the default settings
(JSON logs, traces not exported) but stops short of the network: an API's ``python -m SERVICE
serve`` through ``common.cli.main`` with ``serve`` itself replaced. Then it lists
``sys.modules``. pika must not be there: the APIs publish with aiormq, and
``dramatiq.brokers.rabbitmq`` (Dramatiq's pika broker) is imported by the workers only;
``common.amqp.DEAD_MESSAGE_TTL`` is its value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOT_IN_THE_APIS = ("pika", "dramatiq.brokers.rabbitmq")

SERVE = """
import json, sys

import common.cli
from {service}.__main__ import CLI

async def serve(app, host, port, **_):  # every step of `serve` up to listening
    pass

common.cli.serve = serve
assert common.cli.main(CLI, ["serve"]) == 0
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""


def imported(script: str, tmp_path: Path, jwt_files: dict[str, Path], **env: str) -> set[str]:
    out = tmp_path / "modules.json"
    keys = {name.upper(): str(path) for name, path in jwt_files.items()}
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=tmp_path,
        env={**os.environ, "LOG_FORMAT": "json", "OTEL_TRACES_EXPORTER": "none", **keys, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    modules: list[str] = json.loads(out.read_text())
    return set(modules)


def present(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` were imported (they or any of their modules)."""
    return [p for p in packages if any(m == p or m.startswith(p + ".") for m in modules)]


@pytest.mark.parametrize("service", ["user_api", "order_api", "notifier"])
def test_an_api_serves_without_pika(service: str, tmp_path: Path, jwt_files: dict[str, Path]) -> None:
    modules = imported(SERVE.replace("{service}", service), tmp_path, jwt_files)
    assert {"structlog", f"{service}.app"} <= modules  # the way to serving was taken
    assert present(modules, NOT_IN_THE_APIS) == []


@pytest.mark.parametrize("variable", [None, "3600000"])
def test_the_dead_letter_ttl_is_dramatiqs(variable: str | None, tmp_path: Path) -> None:
    script = (
        "import common.amqp, dramatiq.brokers.rabbitmq as broker;"
        "print(common.amqp.DEAD_MESSAGE_TTL, broker.DEAD_MESSAGE_TTL)"
    )
    env = {k: v for k, v in os.environ.items() if k != "dramatiq_dead_message_ttl"}
    if variable is not None:
        env["dramatiq_dead_message_ttl"] = variable
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    ours, dramatiqs = result.stdout.split()
    assert ours == dramatiqs == (variable or str(86400000 * 7))
