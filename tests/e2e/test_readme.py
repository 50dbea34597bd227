"""The README's examples work as written, against the running stack (issue: 'every curl in the README')."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import GATEWAY_URL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.live_stack


def _try_it_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


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
