"""A supervisord of the tests' own, driven through scripts/lib.sh as deploy.sh drives host mode's.

Every directory (config, socket, pid files, logs) is a fresh one under /tmp (a unix socket path
must stay short), so nothing here touches a running stack's var/.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

from tests.config.conftest import ROOT

LIB = ROOT / "scripts/lib.sh"


def load_events_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("supervisor_events", ROOT / "scripts/supervisor_events.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Supervisor:
    def __init__(self, **settings: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="svops", dir="/tmp"))
        self.run_dir = self.base / "run"
        self.log_dir = self.base / "log"
        self.sv_dir = self.base / "sv"
        self.env = {
            **os.environ,
            "RUN_DIR": str(self.run_dir),
            "LOG_DIR": str(self.log_dir),
            "SUPERVISOR_DIR": str(self.sv_dir),
            "GATEWAY_PREFIX": str(self.base / "gateway"),
            "SV_STARTSECS": "1",
            "SV_REAP_GRACE_S": "5",
            **settings,
        }

    def sh(self, script: str, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``script`` in bash with lib.sh sourced; ``env`` adds to the environment."""
        result = subprocess.run(
            ["bash", "-c", f'set -euo pipefail; . "{LIB}"; {script}', "sh", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"{script}: {result.stdout}{result.stderr}"
        return result

    def launch(self, name: str, *command: str, **env: str) -> None:
        self.sh('launch "$@"', name, *command, check=True, **env)

    def ctl(self, *args: str) -> str:
        return self.sh('sv_ctl "$@"', *args, check=False).stdout

    def state(self, name: str) -> str:
        return self.sh('sv_state "$1"', name).stdout.strip()

    def pid(self, name: str) -> int:
        text = self.ctl("pid", name).strip()
        return int(text) if text.isdigit() else 0

    def wait_running(self, name: str, *, not_pid: int = 0, seconds: float = 60) -> int:
        """The pid once ``name`` is RUNNING (with another pid than ``not_pid``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid and pid != not_pid and self.state(name) == "RUNNING":
                return pid
            time.sleep(0.1)
        raise AssertionError(f"{name} is not RUNNING again: {self.ctl('status')}\n{self.log(name)}")

    def wait_state(self, name: str, wanted: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.state(name) == wanted:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} never became {wanted}: {self.ctl('status')}")

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.sh("sv_shutdown", check=False)
        shutil.rmtree(self.base, ignore_errors=True)
