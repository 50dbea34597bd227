#!/usr/bin/env bash
# Every check the project has, in the order a failure is cheapest to find:
# lint, types, template check, the lock, the unit and integration suites against real
# PostgreSQL, Redis and RabbitMQ, then the end-to-end phase: `deploy.sh local` (a clean restart),
# `integration-tests.sh` through the gateway.
#   ./scripts/test.sh [--keep | --stop] [--skip-e2e | --e2e-only] [PYTEST ARGS...]
# After the end-to-end phase the stack is left as it was found: a stack that was running before
# (`deploy.sh local`, then `test.sh`) is running again afterwards, restarted from this checkout;
# one the tests started is stopped. --keep leaves it running in any case, --stop stops it in any
# case (KEEP_STACK=1 / KEEP_STACK=0 say the same). --skip-e2e (or SKIP_E2E=1) leaves the phase
# out and the stack untouched; --e2e-only runs the end-to-end phase alone. Other arguments go to
# the unit-phase pytest.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

keep="${KEEP_STACK:-}"
skip_e2e="${SKIP_E2E:-0}"
e2e_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --stop) keep=0 ;;
    --skip-e2e) skip_e2e=1 ;;
    --e2e-only) e2e_only=1 ;;
    *) break ;;
  esac
  shift
done

ensure_venv
export TZ=UTC  # aiobreaker compares naive datetimes; keep the whole suite on UTC

if [ "$e2e_only" != 1 ]; then
  step "ruff"
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .

  step "mypy --strict"
  "$VENV/bin/mypy"

  step "lock files current with setup.cfg (scripts/lock.sh --check)"
  bash "$ROOT/scripts/lock.sh" --check

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
fi

if [ "$skip_e2e" = 1 ]; then
  info "end-to-end phase left out (--skip-e2e); a running stack was not touched"
  exit 0
fi

# Was a stack running before? Then it is the user's, and it is running again when we are done.
if "$ROOT/scripts/deploy.sh" status >/dev/null 2>&1; then
  was_running=1
else
  was_running=0
fi
[ -n "$keep" ] || keep=$was_running
finish() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    if ! "$ROOT/scripts/deploy.sh" status >/dev/null 2>&1; then
      warn "the stack is not fully up after the end-to-end phase: ./scripts/deploy.sh status names what is down"
    elif [ "$was_running" = 1 ]; then
      step "the stack that was running before is running again (restarted from this checkout)"
    else
      step "the stack is left running (--keep); ./scripts/deploy.sh stop stops it"
    fi
  else
    step "stopping the stack the end-to-end phase started (--keep leaves it running)"
    "$ROOT/scripts/deploy.sh" stop >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap finish EXIT

if [ "$was_running" = 1 ]; then
  step "end-to-end: deploy.sh local (a stack is running: it is restarted, and left running)"
else
  step "end-to-end: deploy.sh local"
fi
"$ROOT/scripts/deploy.sh" local
step "end-to-end: integration-tests.sh"
"$ROOT/scripts/integration-tests.sh"
if [ "${SKIP_CHAOS:-0}" != 1 ]; then
  # Restarts the stack behind its own fault proxy and stops it at the end (docs/reliability.md).
  step "fault suite: chaos.sh --quick (SKIP_CHAOS=1 leaves it out)"
  "$ROOT/scripts/chaos.sh" --quick
  if [ "$keep" = 1 ]; then "$ROOT/scripts/deploy.sh" local >/dev/null; fi
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  # A smoke run of the benchmark (bench/README.md): it must work end to end; no figure is judged.
  step "benchmark: bench.sh --quick (SKIP_BENCH=1 leaves it out)"
  "$ROOT/scripts/bench.sh" --quick
fi
