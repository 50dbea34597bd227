"""What a service process imports on its way to serving (issue 11: every module is memory).

Each check runs a fresh interpreter that goes the real way to serving with the default settings
(JSON logs, traces not exported) but stops short of the network: an API's ``python -m SERVICE
serve`` through ``common.cli.main`` with ``serve`` itself replaced, the workers' ``python -m
workers`` with Dramatiq's command line replaced by what a forked worker process does first
(import ``workers.app``). Then it lists ``sys.modules``. Packages that no such process uses must
not be there:

- rich and pygments: ``import structlog`` imports them when installed (the development venv),
  for tracebacks this configuration never draws; ``common.logging`` imports structlog without.
- pika, in the APIs: they publish with aiormq; ``dramatiq.brokers.rabbitmq`` (Dramatiq's pika
  broker) is imported by the workers only. ``common.amqp.DEAD_MESSAGE_TTL`` is its value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NEVER = ("rich", "pygments")
NOT_IN_THE_APIS = ("pika", "dramatiq.brokers.rabbitmq")

SERVE = """
import json, sys

import common.cli
from {service}.__main__ import CLI

async def serve(app, host, port, **_):  # every step of `serve` up to listening
    pass

common.cli.serve = serve
assert common.cli.main(CLI, ["serve"]) == 0
{log_lines}
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""

WORKERS = """
import importlib, json, os, sys

import dramatiq.cli

def worker(args):  # a worker process, forked from the master: it imports the broker's module
    importlib.import_module(args.broker)
    return 0

dramatiq.cli.main = worker
os.environ["WORKERS_ENVIRONMENT_PREPARED"] = "1"  # the re-executed interpreter
from workers.__main__ import main

assert main([]) == 0
{log_lines}
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""

# A line with a traceback, through structlog and through the standard library.
LOG_LINES = """
import logging, structlog
try:
    raise RuntimeError("a traceback")
except RuntimeError:
    structlog.get_logger("t").exception("structlog")
    logging.getLogger("t").exception("stdlib")
"""


def imported(script: str, tmp_path: Path, jwt_files: dict[str, Path], **env: str) -> set[str]:
    out = tmp_path / "modules.json"
    keys = {name.upper(): str(path) for name, path in jwt_files.items()}
    result = subprocess.run(
        [sys.executable, "-c", script.replace("{log_lines}", LOG_LINES), str(out)],
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
def test_an_api_serves_without_rich_or_pika(service: str, tmp_path: Path, jwt_files: dict[str, Path]) -> None:
    modules = imported(SERVE.replace("{service}", service), tmp_path, jwt_files)
    assert {"structlog", f"{service}.app"} <= modules  # the way to serving was taken
    assert present(modules, NEVER + NOT_IN_THE_APIS) == []


def test_the_workers_run_without_rich(tmp_path: Path, jwt_files: dict[str, Path]) -> None:
    modules = imported(WORKERS, tmp_path, jwt_files, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert {"structlog", "workers.actors", "dramatiq.brokers.rabbitmq"} <= modules
    assert present(modules, NEVER) == []


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
