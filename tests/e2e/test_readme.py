"""The README's examples work as written, against the running stack (issue: 'every curl in the README'),
and what the README tells a newcomer agrees with what the scripts and .env.example do (offline)."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import GATEWAY_URL

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _try_it_blocks() -> list[str]:
    section = README.split("## Try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def test_the_admin_login_in_the_readme_is_the_admin_deploy_sh_and_env_example_create() -> None:
    logins = re.findall(r'"email":"(admin@[^"]+)","password":"([^"]+)"', README)
    assert logins, "the README shows no admin login"
    deploy = (ROOT / "scripts/deploy.sh").read_text()
    env = _env_example()
    for email, password in logins:
        # Without a .env (deploy.sh's defaults) and with a copied .env.example, the same account.
        assert f'"${{ADMIN_EMAIL:-{email}}}"' in deploy
        assert f'ADMIN_PASSWORD="${{ADMIN_PASSWORD:-{password}}}"' in deploy
        assert (env["ADMIN_EMAIL"], env["ADMIN_PASSWORD"]) == (email, password)


def test_the_readmes_first_two_commands_do_not_undo_each_other() -> None:
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first
    assert [line.split("#")[0].strip() for line in first.group(1).splitlines()] == [
        "./scripts/deploy.sh local",
        "./scripts/test.sh",
    ]
    # test.sh puts back a stack that was running (tests/config/test_test_sh.py runs it).
    test_sh = (ROOT / "scripts/test.sh").read_text()
    assert 'if "$ROOT/scripts/deploy.sh" status' in test_sh
    assert "--keep" in README
    assert "--keep" in test_sh


def test_the_load_test_the_readme_shows_logs_in() -> None:
    assert "./scripts/load-test.sh" in README
    load_test = (ROOT / "scripts/load-test.sh").read_text()
    assert 'admin=$(login "${ADMIN_EMAIL:-admin@example.com}"' in load_test
    assert "Authorization: Bearer" in load_test


@pytest.mark.live_stack
def test_the_readme_examples_run_and_answer_sensibly() -> None:
    blocks = _try_it_blocks()
    assert len(blocks) == 2
    # A fresh address per run: the README registers ada@example.com, which exists after one run.
    email = f"ada.{uuid.uuid4().hex[:8]}@example.com"
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("ada@example.com", email)
    script = script.replace("API=http://localhost", f"API={GATEWAY_URL}")
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    # No problem document anywhere, except the one the README announces after logout.
    problems = [line for line in out.splitlines() if '"title":' in line or '"status": 4' in line]
    assert not problems, problems
    assert '"the access token has been revoked"' in out
    assert '"CONFIRMED"' in out
    assert '"39.98"' in out
    assert '"CANCELLED"' in out
    assert '"SHIPPED"' in out
    assert "204" in out.split()
    # The admin's send answered 202 with a notification id.
    sent = json.loads(out[out.rindex("{") : out.rindex("}") + 1])
    assert sent.get("id")
