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
}

# name|command — the processes `local` runs. Ports come from the environment (see .env.example).
process_table() {
  echo "user_api_1|$PY -m user_api serve --port ${USER_API_PORT:-8081}"
  [ -d order_api ] && [ -f order_api/__main__.py ] && echo "order_api_1|$PY -m order_api serve --port ${ORDER_API_PORT:-8082}"
  [ -f notifier/__main__.py ] && echo "notifier_1|$PY -m notifier serve --port ${NOTIFIER_PORT:-8083}"
  true
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
  shopt -s nullglob
  for pidfile in "$RUN_DIR"/*.pid; do
    local name pid
    name=$(basename "$pidfile" .pid)
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      printf '  %-16s running (pid %s)\n' "$name" "$pid"
    else
      printf '  %-16s DOWN (see %s)\n' "$name" "$LOG_DIR/$name.log"
      down=1
    fi
  done
  for url in "http://127.0.0.1:${USER_API_PORT:-8081}/health/ready"; do
    if body=$(curl -fsS --max-time 2 "$url" 2>/dev/null); then
      printf '  %-16s %s\n' "ready" "$url"
    else
      printf '  %-16s %s %s\n' "NOT READY" "$url" "$body"
      down=1
    fi
  done
  return $down
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

  step "stopping what a previous run started"
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  stop_all

  step "creating databases and applying migrations"
  LOG_FORMAT=console "$PY" -m user_api migrate
  [ -f order_api/__main__.py ] && LOG_FORMAT=console "$PY" -m order_api migrate
  [ -f notifier/__main__.py ] && LOG_FORMAT=console "$PY" -m notifier migrate

  if [ "$APP_ENV" != production ] && [ "$APP_ENV" != staging ]; then
    step "development admin ${ADMIN_EMAIL:-admin@example.com}"
    LOG_FORMAT=console ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-dev-password}" "$PY" -m user_api create-admin "${ADMIN_EMAIL:-admin@example.com}"
  fi

  step "starting the services"
  while IFS='|' read -r name command; do
    # shellcheck disable=SC2086  # the command line is word-split on purpose
    start_process "$name" $command
  done < <(process_table)

  step "waiting for /health/ready"
  wait_http "http://127.0.0.1:${USER_API_PORT:-8081}/health/ready" 60 || {
    tail -n 30 "$LOG_DIR/user_api_1.log" >&2
    die "user_api did not become ready"
  }
  [ -f order_api/__main__.py ] && { wait_http "http://127.0.0.1:${ORDER_API_PORT:-8082}/health/ready" 60 || die "order_api did not become ready; see $LOG_DIR/order_api_1.log"; }
  [ -f notifier/__main__.py ] && { wait_http "http://127.0.0.1:${NOTIFIER_PORT:-8083}/health/ready" 60 || die "notifier did not become ready; see $LOG_DIR/notifier_1.log"; }

  step "up"
  cat <<TXT
    User API        http://127.0.0.1:${USER_API_PORT:-8081}   (OpenAPI: /openapi.yaml)
    Logs            $LOG_DIR      Pids: $RUN_DIR
    Dev admin       ${ADMIN_EMAIL:-admin@example.com} / ${ADMIN_PASSWORD:-admin-dev-password}

    Try:  curl -s -X POST http://127.0.0.1:${USER_API_PORT:-8081}/api/auth/register \\
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
  IMAGE_TAG="$version" docker compose "${files[@]}" up -d --remove-orphans
  IMAGE_TAG="$version" docker compose "${files[@]}" ps
}

main() {
  local cmd=${1:-}
  load_env
  case "$cmd" in
    local) deploy_local ;;
    stop) step "stopping"; stop_all ;;
    status) status ;;
    staging | production) deploy_compose "$cmd" "${2:-}" ;;
    *) die "usage: $0 local | stop | status | staging VERSION | production VERSION" ;;
  esac
}

main "$@"
