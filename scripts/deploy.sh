#!/usr/bin/env bash
# Run the system.
#   ./scripts/deploy.sh local               everything on this host, no Docker (development)
#   ./scripts/deploy.sh stop | status       stop or show what `local` started
#   ./scripts/deploy.sh staging|production VERSION   build images and run docker compose
# Re-running `local` is safe: it stops what it started before and starts it again.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

load_env() {
  if [ -f .env ]; then
    info "reading .env"
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
  fi
  export APP_ENV="${APP_ENV:-development}" TZ=UTC
  # Without an SMTP server of the user's, mail goes to the local sink (listed on :8025).
  if [ -n "${SMTP_HOST:-}" ]; then
    SMTP_HOST_FROM_USER=1
  else
    export SMTP_HOST=127.0.0.1 SMTP_PORT="${SMTP_PORT:-1025}"
  fi
}

# name|readiness URL|command — the processes `local` runs, in start order. Ports come from the
# environment (see .env.example). Two instances of each stateless API sit behind the gateway.
process_table() {
  if [ -z "${SMTP_HOST_FROM_USER:-}" ]; then
    echo "smtp_sink|http://127.0.0.1:${SMTP_SINK_HTTP_PORT:-8025}/health|$PY -m notifier.smtp_sink --port ${SMTP_PORT:-1025} --http-port ${SMTP_SINK_HTTP_PORT:-8025} --maildir var/mail"
  fi
  echo "fake_provider|http://127.0.0.1:${FAKE_PROVIDER_PORT:-8090}/health|$PY -m notifier.fake_provider --port ${FAKE_PROVIDER_PORT:-8090}"
  echo "user_api_1|http://127.0.0.1:${USER_API_PORT:-8081}/health/ready|$PY -m user_api serve --port ${USER_API_PORT:-8081}"
  echo "user_api_2|http://127.0.0.1:${USER_API_PORT_2:-8091}/health/ready|$PY -m user_api serve --port ${USER_API_PORT_2:-8091}"
  echo "order_api_1|http://127.0.0.1:${ORDER_API_PORT:-8082}/health/ready|$PY -m order_api serve --port ${ORDER_API_PORT:-8082}"
  echo "order_api_2|http://127.0.0.1:${ORDER_API_PORT_2:-8092}/health/ready|$PY -m order_api serve --port ${ORDER_API_PORT_2:-8092}"
  echo "notifier_1|http://127.0.0.1:${NOTIFIER_PORT:-8083}/health/ready|$PY -m notifier serve --port ${NOTIFIER_PORT:-8083}"
  echo "workers|http://127.0.0.1:${WORKERS_METRICS_PORT:-9191}/|$PY -m workers --processes ${WORKER_PROCESSES:-2} --threads ${WORKER_THREADS:-8}"
}

start_process() { # name command...
  local name=$1
  shift
  local pidfile="$RUN_DIR/$name.pid" log="$LOG_DIR/$name.log"
  nohup setsid "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  info "started $name (pid $!, log $log)"
}

stop_all() {
  local any=0
  shopt -s nullglob
  for pidfile in "$RUN_DIR"/*.pid; do
    local name pid
    name=$(basename "$pidfile" .pid)
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      # SIGTERM lets the APIs drain and the workers finish the message in hand.
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      info "stopped $name"
      any=1
    fi
    rm -f "$pidfile"
  done
  [ $any -eq 1 ] || info "nothing was running"
}

status() {
  local down=0
  while IFS='|' read -r name url _; do
    local pidfile="$RUN_DIR/$name.pid" pid=""
    [ -f "$pidfile" ] && pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
        printf '  %-14s ready    pid %-7s %s\n' "$name" "$pid" "$url"
      else
        printf '  %-14s NOT READY pid %-6s %s (log: %s)\n' "$name" "$pid" "$url" "$LOG_DIR/$name.log"
        down=1
      fi
    else
      printf '  %-14s DOWN                   (log: %s)\n' "$name" "$LOG_DIR/$name.log"
      down=1
    fi
  done < <(process_table)
  "$ROOT/scripts/gateway.sh" status || down=1
  "$ROOT/scripts/monitoring.sh" status || down=1
  return $down
}

ensure_roles() {
  # The accounts named in .env: a RabbitMQ user and a PostgreSQL role that may create the
  # service databases. Only for servers on this host, and only when they are not the defaults.
  local rmq_user="${RABBITMQ_USERNAME:-guest}" db_user="${DB_USERNAME:-postgres}"
  if [ "$rmq_user" != guest ] && command -v rabbitmqctl >/dev/null; then
    step "RabbitMQ user $rmq_user"
    as_root rabbitmqctl -q add_user "$rmq_user" "${RABBITMQ_PASSWORD:-}" 2>/dev/null ||
      as_root rabbitmqctl -q change_password "$rmq_user" "${RABBITMQ_PASSWORD:-}"
    as_root rabbitmqctl -q set_user_tags "$rmq_user" administrator
    as_root rabbitmqctl -q set_permissions -p "${RABBITMQ_VHOST:-/}" "$rmq_user" ".*" ".*" ".*"
  fi
  if [ "$db_user" != postgres ] && command -v psql >/dev/null; then
    step "PostgreSQL role $db_user and its databases"
    local admin=(psql -q -h "${DB_HOST:-127.0.0.1}" -p "${DB_PORT:-5432}" -U "${DB_ADMIN_USERNAME:-postgres}" -v ON_ERROR_STOP=1)
    PGPASSWORD="${DB_ADMIN_PASSWORD:-}" "${admin[@]}" -d postgres -v role="$db_user" -v password="${DB_PASSWORD:-}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'password') \gexec
SQL
    local db
    for db in "${USER_DB_NAME:-users}" "${ORDER_DB_NAME:-orders}" "${NOTIFICATION_DB_NAME:-notifications}"; do
      PGPASSWORD="${DB_ADMIN_PASSWORD:-}" "${admin[@]}" -d postgres -v role="$db_user" -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('GRANT ALL ON DATABASE %I TO %I', :'db', :'role') \gexec
SQL
      # A database created earlier by another account: let the role use what is already there.
      PGPASSWORD="${DB_ADMIN_PASSWORD:-}" "${admin[@]}" -d "$db" -v role="$db_user" <<'SQL'
SELECT format('GRANT ALL ON SCHEMA public TO %I', :'role') \gexec
SELECT format('GRANT ALL ON ALL TABLES IN SCHEMA public TO %I', :'role') \gexec
SELECT format('GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO %I', :'role') \gexec
SQL
    done
  fi
}

deploy_local() {
  step "checking the host"
  command -v python3 >/dev/null || die "python3 is missing (Debian: apt-get install python3 python3-venv)"
  apt_install curl ca-certificates jq
  ensure_venv

  step "checking PostgreSQL, Redis and RabbitMQ"
  ensure_postgres && info "PostgreSQL ${DB_HOST:-127.0.0.1}:${DB_PORT:-5432} is up"
  ensure_redis && info "Redis ${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379} is up"
  ensure_rabbitmq && info "RabbitMQ ${RABBITMQ_HOST:-127.0.0.1}:${RABBITMQ_PORT:-5672} is up"

  if command -v rabbitmq-plugins >/dev/null; then
    step "RabbitMQ management UI (dead-letter review) and Prometheus plugins"
    as_root rabbitmq-plugins enable --quiet rabbitmq_management rabbitmq_prometheus >/dev/null ||
      warn "could not enable the RabbitMQ management plugin; the DLQ UI at :15672 will be missing"
  fi

  ensure_roles

  step "stopping what a previous run started"
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  stop_all

  step "creating databases and applying migrations"
  LOG_FORMAT=console "$PY" -m user_api migrate
  LOG_FORMAT=console "$PY" -m order_api migrate
  LOG_FORMAT=console "$PY" -m notifier migrate

  if [ "$APP_ENV" != production ] && [ "$APP_ENV" != staging ]; then
    step "development admin ${ADMIN_EMAIL:-admin@example.com}"
    LOG_FORMAT=console ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-dev-password}" "$PY" -m user_api create-admin "${ADMIN_EMAIL:-admin@example.com}"
  fi

  step "starting the services"
  while IFS='|' read -r name _ command; do
    # shellcheck disable=SC2086  # the command line is word-split on purpose
    start_process "$name" $command
  done < <(process_table)

  step "waiting until every process is ready"
  while IFS='|' read -r name url _; do
    if wait_http "$url" 90; then
      info "$name ready"
    else
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "$name did not become ready at $url; its log is $LOG_DIR/$name.log"
    fi
  done < <(process_table)

  step "gateway"
  "$ROOT/scripts/gateway.sh" start

  step "monitoring"
  "$ROOT/scripts/monitoring.sh" start

  local gw="http://localhost"
  [ "${GATEWAY_HTTP_PORT:-80}" = 80 ] || gw="http://localhost:${GATEWAY_HTTP_PORT}"
  step "up"
  cat <<TXT
    Gateway         $gw   (https on :${GATEWAY_HTTPS_PORT:-443}, self-signed in development)
                    /api/auth, /api/users → user_api ×2 (:${USER_API_PORT:-8081}, :${USER_API_PORT_2:-8091})
                    /api/orders → order_api ×2 (:${ORDER_API_PORT:-8082}, :${ORDER_API_PORT_2:-8092})
                    /api/notifications → notifier (:${NOTIFIER_PORT:-8083})
                    /health, /health/user, /health/order, /health/notification
    Mail (sink)     http://127.0.0.1:${SMTP_SINK_HTTP_PORT:-8025}/messages
    Fake SMS/push   http://127.0.0.1:${FAKE_PROVIDER_PORT:-8090}/_fake/messages
    Prometheus      http://127.0.0.1:9090  (targets, alert rules)
    RabbitMQ UI     http://127.0.0.1:15672  (dead letters: queues *.XQ; ${RABBITMQ_USERNAME:-guest}/…)
    Logs            $LOG_DIR      Pids: $RUN_DIR
    Dev admin       ${ADMIN_EMAIL:-admin@example.com} / ${ADMIN_PASSWORD:-admin-dev-password}

    Try:  curl -s -X POST $gw/api/auth/register \\
            -H 'Content-Type: application/json' \\
            -d '{"email":"ada@example.com","password":"correct horse","name":"Ada"}'
TXT
}

deploy_compose() { # staging|production VERSION
  local env=$1 version=${2:-}
  [ -n "$version" ] || die "usage: $0 $env VERSION"
  command -v docker >/dev/null || die "docker is not installed"
  local files=(-f docker-compose.yml -f "docker-compose.$([ "$env" = production ] && echo prod || echo staging).yml")
  step "building images $version"
  IMAGE_TAG="$version" docker compose "${files[@]}" build
  step "starting $env"
  IMAGE_TAG="$version" docker compose "${files[@]}" up -d --remove-orphans --wait
  IMAGE_TAG="$version" docker compose "${files[@]}" ps
}

main() {
  local cmd=${1:-}
  load_env
  case "$cmd" in
    local) deploy_local ;;
    stop)
      step "stopping"
      "$ROOT/scripts/gateway.sh" stop
      stop_all
      ;;
    status) status ;;
    staging | production) deploy_compose "$cmd" "${2:-}" ;;
    *) die "usage: $0 local | stop | status | staging VERSION | production VERSION" ;;
  esac
}

main "$@"
