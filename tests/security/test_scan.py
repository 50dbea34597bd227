"""The scans of scripts/security-scan.sh catch what they claim to, in a scratch copy of the repository.

Each test plants something in a copy (the packages bandit reads, or a small git repository with
docs/security.md) and checks that the scan names it; the unplanted copy is the control. The
repository itself is scanned by scripts/security-scan.sh, not here. Secrets are built at run time:
this file must not hold one (the scan reads tests/ for key material too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tools import security_scan as scan

ROOT = Path(__file__).resolve().parents[2]
BANDIT_TARGETS = ("common", "user_api", "order_api", "notifier", "workers", "gateway_conf")
# The kind of finding accepted six times in user_api/repository.py, once more.
PLANTED_SQL = """

def by_email_sql(email: str) -> str:
    return f"SELECT id FROM users WHERE email = '{email}'"
"""


# --- docs/security.md is what the scans read -----------------------------------------------------


def test_every_accepted_bandit_finding_has_a_count_and_a_reason() -> None:
    baseline = scan.bandit_baseline()
    assert baseline, "no accepted findings read: the table's heading or rows changed shape"
    assert all(count > 0 for count in baseline.values())
    assert {path.split("/")[0] for path, _ in baseline} <= set(BANDIT_TARGETS)


def test_bandit_scans_the_packages_the_page_names() -> None:
    config = (ROOT / ".bandit").read_text()
    assert re.search(r"^targets = " + ",".join(BANDIT_TARGETS) + "$", config, flags=re.M)
    skipped = re.search(r"^skips = (.*)$", config, flags=re.M)
    assert skipped
    page = (ROOT / scan.DOC).read_text()
    for test_id in skipped.group(1).split(","):
        assert f"| {test_id.strip()} (" in page, f"{test_id} is skipped without a reason in {scan.DOC}"


def test_every_allowed_example_value_names_its_files() -> None:
    allowed = scan.secrets_allowlist()
    assert {a.value for a in allowed} >= {"secure_password", "admin123"}
    assert all(a.paths for a in allowed)


def test_a_row_without_a_reason_is_refused(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/security.md").write_text(
        "### bandit: accepted findings\n\n| test | file | count | why |\n|---|---|---|---|\n"
        "| B608 | `user_api/repository.py` | 6 |  |\n"
    )
    with pytest.raises(scan.ScanError, match="no reason"):
        scan.bandit_baseline(tmp_path)


def test_every_test_the_page_names_exists() -> None:
    page = (ROOT / scan.DOC).read_text()
    references = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", page))
    assert len(references) > 40
    missing = [
        f"{path}::{name}"
        for path, name in sorted(references)
        if not (ROOT / path).is_file() or not re.search(rf"def {name}\(", (ROOT / path).read_text())
    ]
    assert not missing, f"{scan.DOC} names tests that do not exist: {missing}"


def test_every_owasp_item_has_a_test_or_a_reason() -> None:
    page = (ROOT / scan.DOC).read_text()
    items = re.split(r"^### (API\d+:2023 .+)$", page, flags=re.M)[1:]
    titles = items[::2]
    assert [t.split(":")[0] for t in titles] == [f"API{n}" for n in range(1, 11)]
    for title, body in zip(titles, items[1::2], strict=True):
        assert "::test_" in body or "Not applicable" in body, title


# --- bandit -------------------------------------------------------------------------------------


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """The packages bandit reads, .bandit and docs/security.md, as they are now."""
    for name in BANDIT_TARGETS:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".bandit", tmp_path / ".bandit")
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / scan.DOC, tmp_path / scan.DOC)
    return tmp_path


def test_bandit_accepts_the_packages_as_they_are(packages: Path) -> None:
    assert scan.check_bandit(packages) == []


def test_bandit_fails_on_a_new_finding(packages: Path) -> None:
    (packages / "common/planted.py").write_text(
        "import subprocess\n\n\ndef run(command: str) -> None:\n    subprocess.call(command, shell=True)\n"
    )
    problems = scan.check_bandit(packages)
    assert any(p.startswith("common/planted.py: 1 x B602") for p in problems), problems


def test_bandit_fails_on_one_more_of_an_accepted_kind(packages: Path) -> None:
    repository = packages / "user_api/repository.py"
    repository.write_text(repository.read_text() + PLANTED_SQL)
    problems = scan.check_bandit(packages)
    assert any(p.startswith("user_api/repository.py: 7 x B608, 6 accepted") for p in problems), problems


def test_bandit_asks_for_a_lower_count_once_a_finding_is_fixed(packages: Path) -> None:
    (packages / "workers/__main__.py").write_text('"""fixed"""\n')
    assert scan.check_bandit(packages) == [
        f"workers/__main__.py: 0 x B606 now, 1 accepted in {scan.DOC}: lower the count"
    ]


# --- secrets ------------------------------------------------------------------------------------


def _private_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _repository(root: Path, files: dict[str, str]) -> Path:
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / scan.DOC, root / scan.DOC)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    return root


def _flagged(root: Path) -> set[tuple[str, str]]:
    problems, _ = scan.check_secrets(root)
    flagged = set()
    for problem in problems:
        match = re.match(r"^(\S+?):\d+: (.+): not on the allow-list", problem)
        assert match, problem
        flagged.add((match.group(1), match.group(2)))
    return flagged


def test_the_secrets_scan_finds_keys_tokens_and_passwords(tmp_path: Path) -> None:
    aws_key = "AKIA" + "Q3EGRIUJ7KXM2PVB"  # built here: a literal would be a finding in this file
    root = _repository(
        tmp_path,
        {
            "deploy/server.key": _private_key_pem(),
            "config/cloud.py": f'REGION = "eu-west-1"\nACCESS_KEY_ID = "{aws_key}"\n',
            "deploy/production.env": "DB_PASSWORD=Vq7rT2mXw9LpZk4e\nLOG_LEVEL=INFO\n",
            "app/settings.py": 'password = "hunter2-but-longer"\n',
            "docker-compose.override.yml": "services:\n  db:\n    environment:\n"
            "      DB_PASSWORD: ${DB_PASSWORD:-n0t-an-example}\n",
            "tests/fixtures/client.pem": _private_key_pem(),
        },
    )
    assert _flagged(root) == {
        ("deploy/server.key", "Private Key"),
        ("config/cloud.py", "AWS Access Key"),
        ("deploy/production.env", "Secret-named variable DB_PASSWORD"),
        ("deploy/production.env", "Secret Keyword"),
        ("app/settings.py", "Secret Keyword"),
        ("docker-compose.override.yml", "Secret-named variable DB_PASSWORD (default)"),
        # Key material counts under tests/ too.
        ("tests/fixtures/client.pem", "Private Key"),
    }


def test_allowed_example_values_pass_only_where_they_are_allowed(tmp_path: Path) -> None:
    root = _repository(
        tmp_path,
        {
            ".env.example": "DB_PASSWORD=secure_password\nRABBITMQ_PASSWORD=admin123\n",
            "deploy/production.env": "DB_PASSWORD=secure_password\n",
            "tests/test_login.py": 'PASSWORD = "correct horse battery"\npassword = "a-made-up-one"\n',
        },
    )
    assert _flagged(root) == {
        ("deploy/production.env", "Secret-named variable DB_PASSWORD"),
        ("deploy/production.env", "Secret Keyword"),
    }
    _, notes = scan.check_secrets(root)
    assert any(
        "'dev-provider-token' is allowed in .env.example but no longer found there" in n for n in notes
    )


def test_references_and_empty_values_are_not_secrets(tmp_path: Path) -> None:
    root = _repository(
        tmp_path,
        {
            "deploy/staging.env": "DB_PASSWORD=\nREDIS_PASSWORD=${REDIS_PASSWORD}\n",
            "compose.yml": "x:\n  DB_PASSWORD: ${DB_PASSWORD:?set it}\n  TOKEN_FILE: /run/secrets/token\n",
            "Jenkinsfile": "DB_PASSWORD = credentials('db-password')\n",
            "docs/vars.md": "| `DB_PASSWORD`, `REDIS_PASSWORD` | required |\n",
        },
    )
    assert _flagged(root) == set()


def test_the_command_exits_non_zero_without_printing_the_secret(tmp_path: Path) -> None:
    secret = "Zr4" + "xQ8vLm2TnP6wKd"
    root = _repository(tmp_path, {"prod.env": f"API_TOKEN={secret}\n"})
    result = subprocess.run(
        [sys.executable, "-m", "tools.security_scan", "secrets", "--root", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "prod.env:1: Secret-named variable API_TOKEN" in result.stderr
    assert secret not in result.stdout + result.stderr
