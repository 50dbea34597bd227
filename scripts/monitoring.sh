#!/usr/bin/env bash
# Prometheus and its exporters on this host (host mode; compose runs them as services).
#   ./scripts/monitoring.sh start    install what is missing, (re)start, wait until Prometheus is ready
#   ./scripts/monitoring.sh stop     stop what `start` started
#   ./scripts/monitoring.sh status   the processes, every scrape target and its health, the alerts
#
# Prometheus listens on http://127.0.0.1:9090 with monitoring/prometheus/prometheus.host.yml:
# every target is configured whether or not its process runs; one that does not run is down.
# Alertmanager (http://127.0.0.1:9093) gets Prometheus' alerts, with a configuration rendered
# from the environment (python -m notifier.alertmanager_config: SMTP_*, ALERT_*); outside
# staging/production the development receiver (python -m notifier.alert_sink, :9095, GET /alerts)
# records every notification. Runbook links start with RUNBOOK_BASE_URL (default: this checkout's
# docs/runbooks.md as a file: URL).
# Each process runs under host mode's supervisord like deploy.sh's (restarted when it exits, log
# in var/log rotated by size), so `deploy.sh stop` stops them too. Prometheus keeps its data in
# var/lib/prometheus.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

PROM_CONFIG="$ROOT/monitoring/prometheus/prometheus.host.yml"
PROM_DATA="${PROMETHEUS_DATA_DIR:-$ROOT/var/lib/prometheus}"
PROM_ADDR="${PROMETHEUS_LISTEN_ADDRESS:-127.0.0.1:9090}"
PROM_URL="http://$PROM_ADDR"
PACKAGES=(prometheus prometheus-postgres-exporter prometheus-redis-exporter prometheus-nginx-exporter prometheus-alertmanager)
AM_CONFIG="$ROOT/var/alertmanager/alertmanager.yml"
AM_DATA="${ALERTMANAGER_DATA_DIR:-$ROOT/var/lib/alertmanager}"
AM_URL="http://127.0.0.1:9093"
ALERT_SINK_PORT="${ALERT_SINK_PORT:-9095}"
# name|port — the processes this script owns, in start order (Prometheus last, so its first
# alerts find Alertmanager, and Alertmanager's first notifications the receiver).
COMPONENTS=("postgres_exporter|9187" "redis_exporter|9121" "nginx_exporter|9113")
is_production() { [ "${APP_ENV:-development}" = production ] || [ "${APP_ENV:-development}" = staging ]; }
COMPONENTS+=("alert_sink|$ALERT_SINK_PORT" "alertmanager|9093" "prometheus|${PROM_ADDR##*:}")

is_local() { [ "$1" = 127.0.0.1 ] || [ "$1" = localhost ] || [ "$1" = ::1 ]; }

postgres_dsn() {
  # key=value form, so the password needs no URL encoding; lib/pq has no sslmode=prefer,
  # which falls back to plaintext anyway.
  local sslmode="${DB_SSLMODE:-prefer}" password="${DB_PASSWORD:-}"
  case "$sslmode" in prefer | allow) sslmode=disable ;; esac
  password=${password//\\/\\\\}
  password=${password//\'/\\\'}
  printf "host=%s port=%s user=%s password='%s' dbname=postgres sslmode=%s" \
    "${DB_HOST:-127.0.0.1}" "${DB_PORT:-5432}" "${DB_USERNAME:-postgres}" "$password" "$sslmode"
}

# launch NAME COMMAND… (scripts/lib.sh) runs a component under supervisord with this shell's
# environment; Prometheus flushes its head block on SIGTERM within supervisord's stop wait.
stop_component() { # name
  stop_program "$1"
  # A component started by an older monitoring.sh, before supervision.
  [ -f "$RUN_DIR/$1.pid" ] && ! sv_running && stop_pidfile "$RUN_DIR/$1.pid"
  return 0
}

stop_all() {
  local entry
  for entry in "${COMPONENTS[@]}"; do stop_component "${entry%%|*}"; done
}

packaged_unit() { # name — the systemd unit the Debian package installs for it
  case "$1" in
    prometheus) echo prometheus ;;
    alertmanager) echo prometheus-alertmanager ;;
    *) echo "prometheus-${1%_exporter}-exporter" ;;
  esac
}

require_free_port() { # name port
  port_open 127.0.0.1 "$2" || return 0
  # On a systemd host, installing the packages starts their own services on the same ports.
  local unit
  unit=$(packaged_unit "$1")
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
    info "stopping the packaged $unit service (it holds port $2; this script runs its own)"
    as_root systemctl stop "$unit"
    for _ in $(seq 1 20); do port_open 127.0.0.1 "$2" || return 0; sleep 0.25; done
  fi
  die "port $2 (for $1) is taken by another process; stop it and retry"
}

enable_rabbitmq_plugins() {
  # rabbitmq_prometheus serves :15692 (/metrics, /metrics/detailed); rabbitmq_management :15672.
  if ! is_local "${RABBITMQ_HOST:-127.0.0.1}"; then
    info "RabbitMQ is remote: enable rabbitmq_prometheus and rabbitmq_management on it"
    return 0
  fi
  if port_open 127.0.0.1 15692 && port_open 127.0.0.1 15672; then
    return 0
  fi
  if ! command -v rabbitmq-plugins >/dev/null; then
    warn "rabbitmq-plugins not found: the rabbitmq targets stay down until RabbitMQ is installed"
    return 0
  fi
  info "enabling rabbitmq_prometheus and rabbitmq_management"
  # A running node enables them at once; a stopped one (--offline) on its next start.
  as_root rabbitmq-plugins enable --quiet rabbitmq_prometheus rabbitmq_management >/dev/null 2>&1 ||
    as_root rabbitmq-plugins enable --offline --quiet rabbitmq_prometheus rabbitmq_management >/dev/null ||
    warn "could not enable the RabbitMQ plugins; see rabbitmq-plugins list"
  wait_port 127.0.0.1 15692 30 || warn "RabbitMQ's Prometheus endpoint :15692 is not answering yet"
}

start_all() {
  step "monitoring: packages"
  apt_install "${PACKAGES[@]}"
  enable_rabbitmq_plugins

  step "monitoring: (re)starting Prometheus and the exporters"
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$PROM_DATA"
  stop_all
  local entry
  for entry in "${COMPONENTS[@]}"; do require_free_port "${entry%%|*}" "${entry##*|}"; done

  # Secrets reach the exporters through their environment, never their command line (ps).
  (
    export DATA_SOURCE_NAME
    DATA_SOURCE_NAME=$(postgres_dsn)
    launch postgres_exporter prometheus-postgres-exporter --web.listen-address=127.0.0.1:9187
  )
  (
    export REDIS_ADDR="redis://${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}" REDIS_PASSWORD="${REDIS_PASSWORD:-}"
    launch redis_exporter prometheus-redis-exporter -web.listen-address=127.0.0.1:9121
  )
  # The nginx exporter exits when stub_status does not answer at start-up; the gateway may come
  # up later (or be restarted), so it keeps retrying instead (about a week at 5 s).
  launch nginx_exporter prometheus-nginx-exporter -web.listen-address=127.0.0.1:9113 \
    -nginx.scrape-uri="${NGINX_STUB_STATUS_URL:-http://127.0.0.1:8080/stub_status}" \
    -nginx.retries=100000 -nginx.retry-interval=5s

  # The development receiver, where Alertmanager's notifications can be read (GET /alerts).
  if ! is_production; then
    mkdir -p "$ROOT/var/alerts"
    launch alert_sink "$PY" -m notifier.alert_sink --port "$ALERT_SINK_PORT" --store "$ROOT/var/alerts/notifications.jsonl"
  fi
  # Alertmanager's configuration is rendered from the environment (it cannot read it itself).
  (
    export SMTP_HOST="${SMTP_HOST:-127.0.0.1}" ALERT_SINK_URL="${ALERT_SINK_URL:-http://127.0.0.1:$ALERT_SINK_PORT/alerts}"
    # Development without a .env: alert e-mail too, to the local SMTP sink (an empty value: none).
    is_production || export ALERT_EMAIL_TO="${ALERT_EMAIL_TO-oncall@example.com}"
    "$PY" -m notifier.alertmanager_config --out "$AM_CONFIG" || die "cannot render Alertmanager's configuration (see above)"
  )
  mkdir -p "$AM_DATA"
  # Development: a fresh notification log, so an alert still firing when the last run stopped is
  # notified again (Alertmanager would otherwise wait its repeat interval); silences are kept.
  is_production || rm -f "$AM_DATA/nflog"
  launch alertmanager prometheus-alertmanager --config.file="$AM_CONFIG" --storage.path="$AM_DATA" \
    --web.listen-address=127.0.0.1:9093 --web.external-url="$AM_URL" --cluster.listen-address=

  # RUNBOOK_BASE_URL is expanded into the external label runbook_base_url, the base of every
  # alert's runbook link (prometheus.host.yml).
  (
    export RUNBOOK_BASE_URL="${RUNBOOK_BASE_URL:-file://$ROOT/docs/runbooks.md}"
    launch prometheus prometheus --config.file="$PROM_CONFIG" --storage.tsdb.path="$PROM_DATA" \
      --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-7d}" --web.listen-address="$PROM_ADDR" \
      --web.enable-lifecycle --enable-feature=expand-external-labels
  )

  wait_http "$PROM_URL/-/ready" 60 || {
    tail -n 20 "$LOG_DIR/prometheus.log" >&2
    die "Prometheus did not become ready; see $LOG_DIR/prometheus.log"
  }
  wait_http "$AM_URL/-/ready" 30 || {
    tail -n 20 "$LOG_DIR/alertmanager.log" >&2
    die "Alertmanager did not become ready; see $LOG_DIR/alertmanager.log"
  }
  info "Prometheus $PROM_URL (targets: $PROM_URL/targets, alerts: $PROM_URL/alerts)"
  info "Alertmanager $AM_URL$(is_production || echo ", development receiver http://127.0.0.1:$ALERT_SINK_PORT/alerts")"
}

print_alerts() {
  # What Alertmanager holds now, and what the development receiver has been sent.
  local body
  body=$(curl -fsS --max-time 3 "$AM_URL/api/v2/alerts" 2>/dev/null) || {
    printf '  %-16s %s\n' "NOT READY" "$AM_URL"
    return 1
  }
  python3 -c '
import json, sys
alerts = json.load(sys.stdin)
if not alerts:
    print("  none")
for a in sorted(alerts, key=lambda a: a["labels"]["alertname"]):
    labels = a["labels"]
    where = labels.get("instance") or (labels.get("vhost", "") + " " + labels.get("queue", "")).strip() or labels.get("service", "")
    print("  %-28s %-9s %-9s %s" % (labels["alertname"], labels.get("severity", ""), a["status"]["state"], where))
' <<<"$body"
  if ! is_production; then
    body=$(curl -fsS --max-time 3 "http://127.0.0.1:$ALERT_SINK_PORT/alerts" 2>/dev/null) || return 1
    python3 -c 'import json, sys; print("  development receiver: %d notified alert(s), GET http://127.0.0.1:%s/alerts" % (json.load(sys.stdin)["count"], sys.argv[1]))' "$ALERT_SINK_PORT" <<<"$body"
  fi
}

print_targets() {
  local body
  body=$(curl -fsS --max-time 3 "$PROM_URL/api/v1/targets?state=active" 2>/dev/null) || {
    printf '  %-16s %s\n' "NOT READY" "$PROM_URL"
    return 1
  }
  python3 -c '
import json, sys
for t in sorted(json.load(sys.stdin)["data"]["activeTargets"], key=lambda t: t["scrapeUrl"]):
    error = t["lastError"] and "  (" + t["lastError"][:80] + ")"
    print("  %-16s %-5s %s%s" % (t["labels"]["job"], t["health"], t["scrapeUrl"], error))
' <<<"$body"
}

status() {
  local down=0 entry name state=""
  for entry in "${COMPONENTS[@]}"; do
    name=${entry%%|*}
    [ "$name" = alert_sink ] && is_production && continue  # development only
    sv_running && state=$(sv_state "$name")
    if [ "$state" = RUNNING ]; then
      printf '  %-16s running (pid %s, supervised)\n' "$name" "$(sv_ctl pid "$name")"
    else
      printf '  %-16s %s (see %s)\n' "$name" "${state:-DOWN}" "$LOG_DIR/$name.log"
      down=1
    fi
  done
  echo "  scrape targets:"
  print_targets || down=1
  echo "  alerts (Alertmanager):"
  print_alerts || down=1
  return $down
}

main() {
  load_env
  case "${1:-}" in
    start) start_all ;;
    stop) step "monitoring: stopping"; stop_all ;;
    status) status ;;
    *) die "usage: $0 start | stop | status" ;;
  esac
}

main "$@"
