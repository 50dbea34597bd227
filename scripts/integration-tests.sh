#!/usr/bin/env bash
# End-to-end tests against a running stack (./scripts/deploy.sh local), through the gateway only:
#   1. the seed's health checks, as written in its README;
#   2. the flow and gateway suites (pytest -m live_stack: tests/e2e, tests/monitoring);
#   3. schemathesis against each service's OpenAPI document, authenticated, bounded in time.
# GATEWAY_URL (default http://localhost) points elsewhere; FUZZ_MAX_TIME bounds each fuzz run;
# FUZZ_SEED fixes schemathesis' seed (a fixed default keeps CI reproducible; change it to explore).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_venv

GATEWAY_URL="${GATEWAY_URL:-http://localhost}"
export GATEWAY_URL
FUZZ_MAX_TIME="${FUZZ_MAX_TIME:-60}"

step "health checks (the seed's Quick Start)"
for path in /health /health/user /health/order /health/notification; do
  info "curl $GATEWAY_URL$path"
  curl -fsS --max-time 5 "$GATEWAY_URL$path" || die "$GATEWAY_URL$path failed"
  echo
done

step "end-to-end suites through the gateway"
"$VENV/bin/pytest" -q -p no:cacheprovider -m live_stack tests/e2e tests/monitoring

step "schemathesis through the gateway (${FUZZ_MAX_TIME}s per service)"
fuzz_token() {
  # A throw-away plain user per run: the fuzzer may delete or re-password the account it runs
  # as, and an admin's rights would let it do that to every other account of the stack too.
  local email password
  email="fuzz-$RANDOM$RANDOM@example.com"
  password="fuzz-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  # The fuzzer may have spent this address's login budget: curl retries a 429 after a pause.
  curl -fsS --retry 20 --retry-delay 3 -o /dev/null -X POST "$GATEWAY_URL/api/auth/register" \
    -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Fuzz\"}"
  curl -fsS --retry 20 --retry-delay 3 -X POST "$GATEWAY_URL/api/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

for service in user order notification; do
  info "$service API"
  token=$(fuzz_token)
  # Left out, with reasons:
  # - the services' own /health/ready, /metrics, /openapi.yaml: not routed by the gateway on purpose;
  # - logout: it would revoke the token the rest of the run uses (fuzzed in-process instead);
  # - positive_data_acceptance: the services are stricter than JSON Schema can say (bytes, emails);
  # - unsupported_method: nginx itself answers TRACE and friends with 405 and no Allow header;
  # - use_after_free, order API only: DELETE /api/orders/{id} cancels (the seed's contract), and
  #   a cancelled order stays readable with its history.
  excluded=positive_data_acceptance,ignored_auth,unsupported_method
  [ "$service" = order ] && excluded="$excluded,use_after_free"
  "$VENV/bin/schemathesis" run "$GATEWAY_URL/openapi/$service.yaml" --url "$GATEWAY_URL" \
    -H "Authorization: Bearer $token" \
    --exclude-path-regex '^/(health/ready|metrics|openapi\.yaml)$' \
    --exclude-path /api/auth/logout \
    --exclude-checks "$excluded" \
    --max-examples 15 --max-time "$FUZZ_MAX_TIME" --rate-limit 50/s --workers 1 --seed "${FUZZ_SEED:-20261125}" \
    --request-timeout 10 --output-truncate true
done

step "integration tests passed"
