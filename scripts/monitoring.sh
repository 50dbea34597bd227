#!/usr/bin/env bash
# Prometheus and its exporters on this host (host mode; compose runs them as services).
#   ./scripts/monitoring.sh start    install what is missing, (re)start, wait until Prometheus is ready
#   ./scripts/monitoring.sh stop     stop what `start` started
#   ./scripts/monitoring.sh status   the processes, then every scrape target and its health
#
# Prometheus listens on http://127.0.0.1:9090 with monitoring/prometheus/prometheus.host.yml:
# every target is configured whether or not its process runs; one that does not run is down.
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
PACKAGES=(prometheus prometheus-postgres-exporter prometheus-redis-exporter prometheus-nginx-exporter)
# name|port — the processes this script owns, in start order (Prometheus last).
COMPONENTS=("postgres_exporter|9187" "redis_exporter|9121" "nginx_exporter|9113" "prometheus|${PROM_ADDR##*:}")

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
  launch prometheus prometheus --config.file="$PROM_CONFIG" --storage.tsdb.path="$PROM_DATA" \
    --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-7d}" --web.listen-address="$PROM_ADDR" \
    --web.enable-lifecycle

  wait_http "$PROM_URL/-/ready" 60 || {
    tail -n 20 "$LOG_DIR/prometheus.log" >&2
    die "Prometheus did not become ready; see $LOG_DIR/prometheus.log"
  }
  info "Prometheus $PROM_URL (targets: $PROM_URL/targets, alerts: $PROM_URL/alerts)"
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
