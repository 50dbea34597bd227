"""scripts/test.sh's end-to-end phase leaves the stack as it found it (README: `deploy.sh local`
then `test.sh`, and "Try it" still works), run with stand-ins for deploy.sh and the integration
tests and the fault suite that record what they were asked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.config.conftest import ROOT

# What ensure_venv hashes, copied so that it finds this checkout's virtualenv up to date.
COPIED = ("scripts/test.sh", "scripts/lib.sh", "setup.cfg", "pyproject.toml", "requirements/dev.txt")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in COPIED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    scripts = tmp_path / "scripts"
    # deploy.sh: records each call; `status` answers from the file "running" (present = up).
    (scripts / "deploy.sh").write_text(
        "#!/usr/bin/env bash\n"
        'root="$(cd "$(dirname "$0")/.." && pwd)"\n'
        'echo "$1" >> "$root/calls"\n'
        'case "$1" in\n'
        '  status) [ -f "$root/running" ] ;;\n'
        '  local) touch "$root/running" ;;\n'
        '  stop) rm -f "$root/running" ;;\n'
        "esac\n"
    )
    (scripts / "integration-tests.sh").write_text(
        "#!/usr/bin/env bash\n"
        'root="$(cd "$(dirname "$0")/.." && pwd)"\n'
        'echo integration >> "$root/calls"\n'
        'exit "$(cat "$root/integration-rc" 2>/dev/null || echo 0)"\n'
    )
    # chaos.sh --quick restarts the stack behind its fault proxy and stops it when done.
    (scripts / "chaos.sh").write_text(
        "#!/usr/bin/env bash\n"
        'root="$(cd "$(dirname "$0")/.." && pwd)"\n'
        'echo chaos >> "$root/calls"\n'
        'rm -f "$root/running"\n'
    )
    # bench.sh --quick puts the stack back as it found it.
    (scripts / "bench.sh").write_text(
        '#!/usr/bin/env bash\nroot="$(cd "$(dirname "$0")/.." && pwd)"\necho "bench$1" >> "$root/calls"\n'
    )
    for script in ("deploy.sh", "integration-tests.sh", "chaos.sh", "bench.sh"):
        (scripts / script).chmod(0o755)
    return tmp_path


def run(checkout: Path, *args: str, running: bool, integration_rc: int = 0) -> tuple[int, list[str], str]:
    if running:
        (checkout / "running").touch()
    (checkout / "integration-rc").write_text(str(integration_rc))
    result = subprocess.run(
        ["bash", "scripts/test.sh", "--e2e-only", *args],
        cwd=checkout,
        env={"PATH": "/usr/bin:/bin", "HOME": str(checkout), "VENV": str(ROOT / ".venv")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    calls = (checkout / "calls").read_text().split() if (checkout / "calls").exists() else []
    return result.returncode, calls, result.stdout + result.stderr


def test_a_stack_that_was_running_is_running_afterwards(checkout: Path) -> None:
    rc, calls, out = run(checkout, running=True)
    assert rc == 0, out
    assert "stop" not in calls
    assert calls[:3] == ["status", "local", "integration"]
    # The fault suite, then a benchmark smoke run, once each.
    assert calls.index("chaos") < calls.index("bench--quick")
    assert (checkout / "running").exists()
    assert "is running again" in out


def test_a_stack_the_tests_started_is_stopped(checkout: Path) -> None:
    rc, calls, out = run(checkout, running=False)
    assert rc == 0, out
    assert calls[:3] == ["status", "local", "integration"]
    assert calls[-1] == "stop"
    assert not (checkout / "running").exists()


def test_keep_leaves_a_stack_the_tests_started_running(checkout: Path) -> None:
    rc, calls, out = run(checkout, "--keep", running=False)
    assert rc == 0, out
    assert "stop" not in calls
    assert (checkout / "running").exists()
    assert "--keep" in out


def test_stop_stops_even_a_stack_that_was_running(checkout: Path) -> None:
    rc, calls, out = run(checkout, "--stop", running=True)
    assert rc == 0, out
    assert calls[-1] == "stop"


def test_a_failing_run_still_leaves_the_users_stack_up_and_fails(checkout: Path) -> None:
    rc, calls, out = run(checkout, running=True, integration_rc=3)
    assert rc == 3, out
    assert "stop" not in calls


def test_a_failing_run_stops_the_stack_it_started_and_fails(checkout: Path) -> None:
    rc, calls, out = run(checkout, running=False, integration_rc=3)
    assert rc == 3, out
    assert calls[-1] == "stop"


def test_skip_e2e_touches_nothing(checkout: Path) -> None:
    result = subprocess.run(
        ["bash", "scripts/test.sh", "--e2e-only", "--skip-e2e"],
        cwd=checkout,
        env={"PATH": "/usr/bin:/bin", "HOME": str(checkout), "VENV": str(ROOT / ".venv")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (checkout / "calls").exists()
