"""The security scans of ``scripts/security-scan.sh``: bandit above a baseline, and committed secrets.

    python -m tools.security_scan bandit     # bandit on the packages; fails above the baseline
    python -m tools.security_scan secrets    # no private key or real-looking secret in git ls-files

Both baselines are tables in ``docs/security.md`` ("Accepted exceptions"), each row with its
reason: that page is the one place where an exception is accepted, and these scans read it.

bandit: ``.bandit`` says what is scanned and which tests are skipped. Every finding is counted
per file and test id; a count above the table's fails, and so does a count below it (the table
is lowered with the fix, so it stays exact). bandit's own ``--baseline`` is not used: it matches
findings by file and kind without counting, so a second SQL string built in the same file as an
accepted one would pass unseen.

secrets: detect-secrets' detectors (private keys, cloud and SaaS tokens, JWTs, high-entropy
strings, password-like assignments) over every tracked file, plus one rule of this project's own
that detect-secrets lacks: an unquoted ``NAME=value`` or ``NAME: value`` for a password-, token-
or secret-named variable, and a ``${NAME:-default}`` default, as in .env and compose files.
Under ``tests/`` only key material and provider tokens count: tests use made-up passwords by
design. A finding is accepted when its value is on the table's allow-list for that file.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = Path("docs/security.md")

# detect-secrets' detectors that guess from names and entropy: off under tests/ (see above).
GUESSING_DETECTORS = frozenset(
    {"Secret Keyword", "Hex High Entropy String", "Base64 High Entropy String", "Basic Auth Credentials"}
)
MADE_UP_VALUES_UNDER = ("tests/",)
ENV_RULE = "Secret-named variable"

# S105: a pattern for secret-named variables, not a secret.
_SECRET_NAME = r"[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|ACCESS_KEY|SECRET_KEY)"  # noqa: S105
# NAME=value (.env, shell) or NAME: value (YAML), the value a bare literal: no $reference,
# no call, no quotes around an expression.
_ASSIGNMENT = re.compile(
    rf"^\s*(?:export\s+|-\s+)?(?P<name>{_SECRET_NAME})\s*[=:]\s*"
    r"(?P<quote>[\"']?)(?P<value>[^\s\"'$`{}()\[\],;]+)(?P=quote)\s*(?:#.*)?$"
)
_DEFAULT = re.compile(rf"\$\{{(?P<name>{_SECRET_NAME}):?-(?P<value>[^}}\s$]+)\}}")
_BANDIT_ROW = re.compile(r"^\|\s*(B\d{3})\s*\|\s*`([^`]+)`\s*\|\s*(\d+)\s*\|(.+)\|\s*$")
_ALLOW_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]+)\|(.+)\|\s*$")


class ScanError(RuntimeError):
    """The scan could not run, or docs/security.md does not say what it must."""


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


@dataclass(frozen=True)
class Allowed:
    value: str
    paths: tuple[str, ...]  # globs, relative to the repository

    def covers(self, finding: Finding) -> bool:
        return finding.value == self.value and any(fnmatch.fnmatch(finding.path, p) for p in self.paths)


# --- docs/security.md ---------------------------------------------------------------------------


def _section(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise ScanError(f"{DOC} has no '{heading}' section") from None
    level = heading.split(" ", 1)[0]
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("#") and len(line.split(" ", 1)[0]) <= len(level):
            break
        body.append(line)
    return body


def bandit_baseline(root: Path = ROOT) -> Counter[tuple[str, str]]:
    """(file, test id) -> accepted count, from the table under '### bandit: accepted findings'."""
    baseline: Counter[tuple[str, str]] = Counter()
    for line in _section((root / DOC).read_text(), "### bandit: accepted findings"):
        match = _BANDIT_ROW.match(line)
        if match:
            test_id, path, count, reason = match.groups()
            if not reason.strip():
                raise ScanError(f"{DOC}: {test_id} in {path} has no reason")
            baseline[(path, test_id)] += int(count)
    return baseline


def secrets_allowlist(root: Path = ROOT) -> list[Allowed]:
    """Example values and where they may stand, from '### Secrets scan: allowed example values'."""
    allowed = []
    for line in _section((root / DOC).read_text(), "### Secrets scan: allowed example values"):
        match = _ALLOW_ROW.match(line)
        if match:
            value, paths, reason = match.groups()
            globs = tuple(p.strip().strip("`") for p in paths.split(",") if p.strip())
            if not globs or not reason.strip():
                raise ScanError(f"{DOC}: the allowed value {value!r} needs its files and a reason")
            allowed.append(Allowed(value, globs))
    return allowed


# --- bandit -------------------------------------------------------------------------------------


def bandit_findings(root: Path = ROOT) -> Counter[tuple[str, str]]:
    """Run bandit as ``.bandit`` says; (file, test id) -> count."""
    bandit = Path(sys.executable).with_name("bandit")
    command = [str(bandit) if bandit.exists() else "bandit", "--ini", ".bandit", "-f", "json", "-q"]
    try:
        # S603: bandit from the venv (or PATH) with a fixed argument list, no shell.
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
    except FileNotFoundError:
        raise ScanError("bandit is not installed (pip install -e '.[dev]')") from None
    if result.returncode not in (0, 1):  # 1: findings; anything else: bandit did not run
        raise ScanError(f"bandit failed ({result.returncode}): {result.stderr.strip()}")
    report = json.loads(result.stdout)
    if report.get("errors"):
        raise ScanError(f"bandit could not read: {report['errors']}")
    return Counter((Path(r["filename"]).as_posix(), r["test_id"]) for r in report["results"])


def check_bandit(root: Path = ROOT) -> list[str]:
    found, accepted = bandit_findings(root), bandit_baseline(root)
    problems = []
    for (path, test_id), count in sorted(found.items()):
        if count > accepted[(path, test_id)]:
            problems.append(
                f"{path}: {count} x {test_id}, {accepted[(path, test_id)]} accepted in {DOC} "
                f"(bandit --ini .bandit {path} shows them)"
            )
    for (path, test_id), count in sorted(accepted.items()):
        if found[(path, test_id)] < count:
            now = found[(path, test_id)]
            problems.append(f"{path}: {now} x {test_id} now, {count} accepted in {DOC}: lower the count")
    return problems


# --- secrets ------------------------------------------------------------------------------------


def tracked_files(root: Path) -> list[str]:
    # S607: git from PATH with fixed arguments, as a developer runs it.
    result = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)  # noqa: S607
    return [name for name in result.stdout.decode().split("\0") if name and (root / name).is_file()]


def _detect_secrets(root: Path, files: Sequence[str]) -> Iterator[Finding]:
    try:
        from detect_secrets.core.scan import scan_file
        from detect_secrets.settings import default_settings
    except ImportError:
        raise ScanError("detect-secrets is not installed (pip install -e '.[dev]')") from None

    with default_settings():
        for name in files:
            for secret in scan_file(str(root / name)):
                value = secret.secret_value or ""
                # A keyword next to a list of Markdown code spans names variables, not a value.
                if secret.type == "Secret Keyword" and "`" in value:
                    continue
                yield Finding(name, secret.line_number, secret.type, value)


def _secret_assignments(root: Path, files: Sequence[str]) -> Iterator[Finding]:
    for name in files:
        try:
            text = (root / name).read_text()
        except (UnicodeDecodeError, OSError):
            continue  # not text
        for number, line in enumerate(text.splitlines(), start=1):
            assignment = _ASSIGNMENT.match(line)
            if assignment:
                yield Finding(name, number, f"{ENV_RULE} {assignment['name']}", assignment["value"])
            for default in _DEFAULT.finditer(line):
                yield Finding(name, number, f"{ENV_RULE} {default['name']} (default)", default["value"])


def secret_findings(root: Path = ROOT, files: Iterable[str] | None = None) -> list[Finding]:
    names = sorted(files if files is not None else tracked_files(root))
    findings = [*_detect_secrets(root, names), *_secret_assignments(root, names)]
    return [f for f in findings if not (f.path.startswith(MADE_UP_VALUES_UNDER) and _guessed(f))]


def _guessed(finding: Finding) -> bool:
    return finding.kind in GUESSING_DETECTORS or finding.kind.startswith(ENV_RULE)


def check_secrets(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(problems, notes): findings not allowed, and allowed values no longer found (harmless)."""
    allowlist = secrets_allowlist(root)
    findings = secret_findings(root)
    problems = [
        f"{f}: not on the allow-list in {DOC}" for f in findings if not any(a.covers(f) for a in allowlist)
    ]
    notes = [
        f"{DOC}: {a.value!r} is allowed in {', '.join(a.paths)} but no longer found there"
        for a in allowlist
        if not any(a.covers(f) for f in findings)
    ]
    return problems, notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.security_scan", description=__doc__.split("\n")[0])
    parser.add_argument("scan", choices=("bandit", "secrets"))
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    notes: list[str] = []
    try:
        if args.scan == "bandit":
            problems = check_bandit(args.root)
        else:
            problems, notes = check_secrets(args.root)
    except (ScanError, OSError, subprocess.CalledProcessError, json.JSONDecodeError) as exc:
        print(f"{args.scan}: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"{args.scan}: note: {note}")
    for problem in problems:
        print(f"{args.scan}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.scan}: nothing above the accepted exceptions in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
