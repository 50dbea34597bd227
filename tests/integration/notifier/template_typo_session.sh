#!/usr/bin/env bash
# shellcheck disable=SC2317  # the checks are functions called through wait_for
# Issue 17's session on the running host-mode stack: an order, a typo saved in the order email's
# subject, three orders while it is live, the alert, the fix, one more order. Exits non-zero
# unless every order got exactly one "order received" email (the last good subject while the
# typo was live), readiness said DEGRADED, both rendering jobs exported templates_last_reload_ok 0
# and TemplateReloadFailed fired.
#
# The stack must serve a copy of the templates (the script edits it), and it holds the stack:
#   export TEMPLATES_DIR=$(mktemp -d)/templates && cp -r templates "$TEMPLATES_DIR"
#   flock /tmp/stack.lock bash -c './scripts/deploy.sh local && tests/integration/notifier/template_typo_session.sh; ./scripts/deploy.sh stop'
set -euo pipefail
: "${TEMPLATES_DIR:?export TEMPLATES_DIR (a copy of templates/) before deploy.sh local}"
API=${API:-http://localhost}
SUBJECT="$TEMPLATES_DIR/email/order.created.subject.txt"
ORIGINAL=$(cat "$SUBJECT")
failures=0

log() { echo "[$(date -u +%H:%M:%S)] $*"; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
save() { printf '%s\n' "$1" >"$SUBJECT"; touch -d "+2 seconds" "$SUBJECT"; }
trap 'save "$ORIGINAL"' EXIT

post() { # path json [curl args…] — the response body; a non-2xx status stops the session
  local path=$1 body=$2 out
  shift 2
  out=$(curl -s -w '\n%{http_code}' -X POST "$API$path" -H 'Content-Type: application/json' -d "$body" "$@")
  [[ "${out##*$'\n'}" == 2* ]] || { echo "POST $path: ${out//$'\n'/ }" >&2; exit 1; }
  echo "${out%$'\n'*}"
}
email="typo.$(date +%s%N)@example.com"
credentials="{\"email\":\"$email\",\"password\":\"correct horse\"}"
post /api/auth/register "{\"email\":\"$email\",\"password\":\"correct horse\",\"name\":\"Ada\"}" >/dev/null
access=$(post /api/auth/login "$credentials" | jq -r .access_token)
order() {
  post /api/orders '{"currency":"EUR","items":[{"sku":"BOOK-1","name":"A book","quantity":1,"unit_price":"9.99"}]}' \
    -H "Authorization: Bearer $access" | jq -r .id
}
templates_state() { curl -s http://127.0.0.1:8083/health/ready | jq -r .components.templates.status; }
reload_ok() { curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "templates_last_reload_ok" { print $2 }'; }
wait_for() { # seconds command… — until the command succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}
is_state() { [ "$(templates_state)" = "$1" ]; }
is_reload_ok() { [ "$(reload_ok "$1")" = "$2" ]; }
alert_firing() {
  curl -s localhost:9090/api/v1/alerts |
    jq -e '[.data.alerts[] | select(.labels.alertname == "TemplateReloadFailed" and .state == "firing")] | length > 0' >/dev/null
}

old=("$(order)")
log "order ${old[0]} placed; saving a typo"
save 'BROKEN {{ order.id '
wait_for 30 is_state DEGRADED || fail "readiness did not report the templates DEGRADED"
wait_for 30 is_reload_ok 8083 0.0 || fail "the notifier does not export templates_last_reload_ok 0"
wait_for 30 is_reload_ok 9191 0.0 || fail "the workers do not export templates_last_reload_ok 0"
for _ in 1 2 3; do old+=("$(order)"); done
log "orders placed during the typo: ${old[*]:1}"
wait_for 180 alert_firing || fail "TemplateReloadFailed did not fire"
log "alert: $(curl -s localhost:9090/api/v1/alerts | jq -c '[.data.alerts[] | select(.labels.alertname == "TemplateReloadFailed") | {state, job: .labels.job}]')"

save 'Your order {{ order.id }} is confirmed'
wait_for 30 is_state UP || fail "readiness did not return to UP after the fix"
wait_for 30 is_reload_ok 9191 1.0 || fail "the workers did not load the fix"
new=$(order)
log "order $new placed after the fix"

order_emails_sent() { # n — this user's order.created emails are all sent
  curl -s "$API/api/notifications?channel=email&limit=100" -H "Authorization: Bearer $access" |
    jq -e --argjson n "$1" '[.items[] | select(.template == "order.created" and .status == "sent")] | length == $n' >/dev/null
}
wait_for 60 order_emails_sent 5 || fail "not every order.created email of this user is sent"
mail=$(curl -s http://127.0.0.1:8025/messages) # the sink's whole list, newest first: read it once
expect_email() { # order-id subject
  local found
  found=$(jq --arg o "$1" '[.items[] | select(.subject | contains($o)) | select(.subject | contains(" now ") | not) | .subject]' <<<"$mail")
  [ "$(jq length <<<"$found")" = 1 ] && [ "$(jq -r '.[0]' <<<"$found")" = "$2" ]
}
for id in "${old[@]}"; do
  expect_email "$id" "We received your order $id" || fail "order $id: not exactly one email 'We received your order $id'"
done
expect_email "$new" "Your order $new is confirmed" || fail "order $new: not exactly one email with the fixed subject"
for status in failed held dead; do
  count=$(curl -s "$API/api/notifications?status=$status" -H "Authorization: Bearer $access" | jq .total)
  [ "$count" = 0 ] || fail "$count of this user's notifications are $status"
done
[ "$failures" = 0 ] && log "ok: 5 orders, 5 'order received' emails, alert raised during the typo"
exit "$failures"
