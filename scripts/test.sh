#!/usr/bin/env bash
# Every check the project has, in the order a failure is cheapest to find:
# lint, types, template check, then the test suites against real PostgreSQL, Redis and RabbitMQ.
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

if [ -f notifier/templates.py ] || [ -d notifier/templates ]; then
  step "notification templates"
  "$PY" -m notifier.templates check
fi

step "pytest"
ensure_postgres
ensure_redis
ensure_rabbitmq
"$VENV/bin/pytest" -q -p no:cacheprovider -m "not live_stack" "$@"
