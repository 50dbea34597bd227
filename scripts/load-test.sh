#!/usr/bin/env bash
# Informational load test against a running stack (./scripts/deploy.sh local), through the gateway:
#   1. the seed's `ab -n 1000 -c 10 http://localhost/api/users`, with an admin token;
#   2. order creation, `ab -n 300 -c 5` POST /api/orders as a plain user.
# Prints requests/s and latency percentiles. Not a pass/fail test: results go in bench/README.md.
# The gateway's per-address rate limit (100 r/s) would turn most of this into 429s, so the script
# reloads the gateway with a high limit for the run and restores the configured one afterwards.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_venv
command -v ab >/dev/null || apt_install apache2-utils

GATEWAY_URL="${GATEWAY_URL:-http://localhost}"
REQUESTS="${REQUESTS:-1000}"
CONCURRENCY="${CONCURRENCY:-10}"
ORDER_REQUESTS="${ORDER_REQUESTS:-300}"
ORDER_CONCURRENCY="${ORDER_CONCURRENCY:-5}"
work=$(mktemp -d)
restore_gateway() { "$ROOT/scripts/gateway.sh" start >/dev/null 2>&1 || warn "could not restore the gateway"; rm -rf "$work"; }
trap restore_gateway EXIT

step "gateway with a high rate limit for the run"
GATEWAY_API_RATE=100000r/s GATEWAY_API_BURST=100000 "$ROOT/scripts/gateway.sh" start >/dev/null

login() { # email password
  curl -fsS --retry 10 --retry-delay 3 -X POST "$GATEWAY_URL/api/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

report() { # ab output file, label
  "$PY" - "$1" "$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def grab(pattern: str) -> str:
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else "?"
pct = dict(re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.M))
non2xx = grab(r"Non-2xx responses:\s+(\d+)")
rps = grab(r"Requests per second:\s+([\d.]+)")
failed = grab(r"Failed requests:\s+(\d+)")
print(f"{sys.argv[2]}: {rps} req/s, "
      f"p50 {pct.get('50', '?')} ms, p95 {pct.get('95', '?')} ms, p99 {pct.get('99', '?')} ms, "
      f"max {pct.get('100', '?')} ms, failed {failed}, non-2xx {0 if non2xx == '?' else non2xx}")
PY
}

admin=$(login "${ADMIN_EMAIL:-admin@example.com}" "${ADMIN_PASSWORD:-admin-dev-password}")
step "ab -n $REQUESTS -c $CONCURRENCY $GATEWAY_URL/api/users (admin)"
ab -q -n "$REQUESTS" -c "$CONCURRENCY" -k -H "Authorization: Bearer $admin" "$GATEWAY_URL/api/users" >"$work/users.txt"
report "$work/users.txt" "GET /api/users"

step "ab -n $ORDER_REQUESTS -c $ORDER_CONCURRENCY POST $GATEWAY_URL/api/orders"
email="load-$RANDOM$RANDOM@example.com"
curl -fsS -o /dev/null -X POST "$GATEWAY_URL/api/auth/register" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"load test password\",\"name\":\"Load\"}"
user=$(login "$email" "load test password")
echo '{"currency":"EUR","items":[{"sku":"LOAD-1","name":"Load item","quantity":1,"unit_price":"9.99"}]}' >"$work/order.json"
ab -q -n "$ORDER_REQUESTS" -c "$ORDER_CONCURRENCY" -k -p "$work/order.json" -T application/json \
  -H "Authorization: Bearer $user" "$GATEWAY_URL/api/orders" >"$work/orders.txt"
report "$work/orders.txt" "POST /api/orders"
