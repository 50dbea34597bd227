#!/usr/bin/env bash
# Every check the project has, in the order a failure is cheapest to find:
# lint, types, template check, the unit and integration suites against real PostgreSQL, Redis and
# RabbitMQ, then the end-to-end phase: `deploy.sh local`, `integration-tests.sh` through the
# gateway, `deploy.sh stop`. The end-to-end phase replaces a stack you may have running;
# SKIP_E2E=1 leaves it out. Arguments go to the unit-phase pytest.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_venv
export TZ=UTC  # aiobreaker compares naive datetimes; keep the whole suite on UTC

step "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

step "mypy --strict"
"$VENV/bin/mypy"

step "security scan (bandit, committed secrets)"
bash "$ROOT/scripts/security-scan.sh"

if [ -f notifier/templates.py ] || [ -d notifier/templates ]; then
  step "notification templates"
  "$PY" -m notifier.templates check
fi

step "pytest"
ensure_postgres
ensure_redis
ensure_rabbitmq
"$VENV/bin/pytest" -q -p no:cacheprovider -m "not live_stack" "$@"

if [ "${SKIP_E2E:-0}" = 1 ]; then
  info "SKIP_E2E=1: end-to-end phase left out"
  exit 0
fi
step "end-to-end: deploy.sh local"
trap '"$ROOT/scripts/deploy.sh" stop >/dev/null 2>&1 || true' EXIT
"$ROOT/scripts/deploy.sh" local
step "end-to-end: integration-tests.sh"
"$ROOT/scripts/integration-tests.sh"
