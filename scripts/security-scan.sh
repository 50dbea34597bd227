#!/usr/bin/env bash
# The security scans (docs/security.md), run by scripts/test.sh and so by CI:
#   scripts/security-scan.sh            bandit, then the secrets scan
#   scripts/security-scan.sh bandit     bandit on the Python packages (.bandit), failing on any
#                                       finding above the accepted ones in docs/security.md
#   scripts/security-scan.sh secrets    no private key or real-looking secret in `git ls-files`,
#                                       but the example values docs/security.md allows
# hadolint, check-jsonschema (compose, workflow) and shellcheck run with the configuration
# checks in tests/config; .env.example's values being refused in production is tests/security.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_venv

scans=("$@")
[ ${#scans[@]} -gt 0 ] || scans=(bandit secrets)
for scan in "${scans[@]}"; do
  case "$scan" in
    bandit) step "bandit (accepted findings: docs/security.md)" ;;
    secrets) step "secrets in git ls-files (allowed example values: docs/security.md)" ;;
    *) die "usage: $0 [bandit] [secrets]" ;;
  esac
  "$PY" -m tools.security_scan "$scan"
done
