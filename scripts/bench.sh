#!/usr/bin/env bash
# The order-pipeline benchmark (bench/README.md). Usage: ./scripts/bench.sh [--quick] [--out DIR]
#
# Puts the `deploy.sh local` stack on a PostgreSQL cluster of the benchmark's own (port
# BENCH_PG_PORT, default 55432, with pg_stat_statements preloaded — the machine's shared server
# is never restarted), lifts the gateway's per-address rate limit, runs `python -m bench`, and
# afterwards puts things back: the stack on the configured database if one was running before,
# otherwise stopped. Results: var/bench/<timestamp>/results.json, results.md and PNG plots.
# --quick runs in about two minutes (a smoke test, CI runs it); the full run takes about 25.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_venv
command -v wrk >/dev/null || apt_install wrk
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
BENCH_PG_PORT="${BENCH_PG_PORT:-55432}"
GATEWAY_URL="${GATEWAY_URL:-http://127.0.0.1}"

was_running=0
curl -fsS -o /dev/null --max-time 3 "$GATEWAY_URL/health" 2>/dev/null && was_running=1

restore() {
  local rc=$?
  step "putting the stack back"
  if [ "$was_running" = 1 ]; then
    "$ROOT/scripts/deploy.sh" local >/dev/null || warn "could not restart the stack on its own database"
  else
    "$ROOT/scripts/deploy.sh" stop >/dev/null || true
  fi
  "$PY" -m bench.pgcluster stop || true
  exit "$rc"
}
trap restore EXIT

step "benchmark PostgreSQL cluster on :$BENCH_PG_PORT (pg_stat_statements)"
"$PY" -m bench.pgcluster start --port "$BENCH_PG_PORT" >/dev/null
# Only the stack and the benchmark see the cluster; restore() runs with the caller's environment.
on_bench_cluster=(env DB_HOST=127.0.0.1 DB_PORT="$BENCH_PG_PORT" DB_USERNAME=postgres DB_PASSWORD=)

step "stack on the benchmark's cluster"
"${on_bench_cluster[@]}" "$ROOT/scripts/deploy.sh" local

step "gateway with a high rate limit for the run"
GATEWAY_API_RATE=100000r/s GATEWAY_API_BURST=100000 "$ROOT/scripts/gateway.sh" start >/dev/null

step "python -m bench $*"
"${on_bench_cluster[@]}" "$PY" -m bench --gateway "$GATEWAY_URL" "$@"
