#!/usr/bin/env bash
# The API gateway on this host (no Docker): nginx in front of the services `deploy.sh local` runs.
#   scripts/gateway.sh start    render the configuration, check it, start nginx (reload it if running)
#   scripts/gateway.sh reload   the same as start
#   scripts/gateway.sh stop     graceful stop: requests in flight are finished first
#   scripts/gateway.sh status   running? answering /health? and each service through it
#   scripts/gateway.sh test     render and `nginx -t`, nothing started
#   scripts/gateway.sh render   render only (var/gateway/conf/nginx.conf)
#   scripts/gateway.sh reopen   reopen the log files (nginx -s reopen)
# The configuration is rendered from gateway_conf/templates by `python -m gateway_conf.render`;
# ports, instances and CORS origins come from the environment (.env; see docs/deployment.md).
# nginx runs with its own prefix (GATEWAY_PREFIX, default var/gateway: config, pid, temp files,
# the development certificate), so nothing under /etc/nginx is touched and the system's nginx
# service, if any, stays out of it. It runs in the foreground under host mode's supervisord
# (program "gateway", restarted when it exits), which writes its access log (stdout) and error
# log (stderr) to var/log/gateway.{access,error}.log and rotates them by size.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
load_env

PREFIX="${GATEWAY_PREFIX:-$ROOT/var/gateway}"
CONF="$PREFIX/conf/nginx.conf"
PID_FILE="$PREFIX/nginx.pid"
ERROR_LOG="$LOG_DIR/gateway.error.log"
ACCESS_LOG="$LOG_DIR/gateway.access.log"
HTTP_PORT="${GATEWAY_HTTP_PORT:-80}"
PROBE_HOST="${GATEWAY_LISTEN_ADDRESS:-127.0.0.1}"
BASE_URL="http://$PROBE_HOST:$HTTP_PORT"

nginx_bin() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || return 1
}

ensure_nginx() {
  nginx_bin >/dev/null && return 0
  step "installing nginx"
  apt_install nginx
  # Debian starts its own nginx (the default site on port 80) on install; this project runs
  # nginx with its own prefix and configuration instead.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    as_root systemctl disable --now nginx >/dev/null 2>&1 || true
  elif [ -f /run/nginx.pid ]; then
    as_root /usr/sbin/nginx -s quit 2>/dev/null || true
  fi
  nginx_bin >/dev/null || die "nginx is not installed and apt-get could not install it"
}

python_bin() {
  ensure_venv >&2  # cheap when up to date; a changed setup.cfg (new dependency) reinstalls
  echo "$PY"
}

render() {
  local user_args=()
  if [ "$(id -u)" -eq 0 ]; then
    # A root master drops its workers to an unprivileged user, provided that user can reach the
    # checkout (the /docs assets and nginx's temp folders live in it). A checkout inside a
    # private folder (a CI clone under a 0700 mktemp dir) cannot be reached: there the workers
    # keep root, which is acceptable for this development-only host mode and said out loud.
    local worker=nobody
    id -u www-data >/dev/null 2>&1 && worker=www-data
    if command -v runuser >/dev/null && ! runuser -u "$worker" -- test -r "$ROOT/gateway_conf/docs/index.html" 2>/dev/null; then
      warn "$worker cannot read $ROOT (a private parent folder?): the gateway's workers run as root"
      worker=root
    fi
    user_args=(--worker-user "$worker")
  fi
  local python out
  python=$(python_bin)
  mkdir -p "$PREFIX" "$LOG_DIR"
  if ! out=$(GATEWAY_PREFIX="$PREFIX" LOG_DIR="$LOG_DIR" GATEWAY_ACCESS_LOG=/dev/stdout GATEWAY_ERROR_LOG=/dev/stderr \
    PATH="$PATH:/usr/sbin" "$python" -m gateway_conf.render --mode host \
    --out "$PREFIX/conf" --self-signed-if-missing "${user_args[@]}" 2>&1); then
    printf '%s\n' "$out" >&2
    die "rendering the gateway configuration failed"
  fi
  printf '%s\n' "$out" | sed 's/^/    /'
}

nginx_cmd() {
  "$(nginx_bin)" -p "$PREFIX/" -c "$CONF" -e stderr "$@"
}

check_config() {
  local out
  if ! out=$(nginx_cmd -t -q 2>&1); then
    printf '%s\n' "$out" >&2
    die "nginx rejected the rendered configuration ($CONF)"
  fi
}

running_pid() {
  local pid
  [ -f "$PID_FILE" ] || return 1
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  ensure_nginx
  step "gateway: rendering and checking the nginx configuration"
  render
  check_config
  local pid
  if supervised && pid=$(running_pid); then
    nginx_cmd -s reload
    info "reloaded the running gateway (pid $pid)"
  else
    stop_unsupervised || true
    if port_open "$PROBE_HOST" "$HTTP_PORT"; then
      die "port $HTTP_PORT is taken by another program (a system nginx? \`systemctl disable --now nginx\`); stop it or set GATEWAY_HTTP_PORT"
    fi
    # QUIT: nginx finishes the requests in flight before it exits.
    launch --priority 600 --stopsignal QUIT --log "$ACCESS_LOG" --stderr-log "$ERROR_LOG" \
      gateway "$(nginx_bin)" -p "$PREFIX/" -c "$CONF" -e stderr -g "daemon off;"
  fi
  if ! wait_http "$BASE_URL/health" 15; then
    tail -n 20 "$ERROR_LOG" >&2 || true
    die "the gateway does not answer $BASE_URL/health"
  fi
  info "nginx pid $(sv_ctl pid gateway), logs $LOG_DIR/gateway.{access,error}.log"
  info "gateway up: $BASE_URL and https://$PROBE_HOST:${GATEWAY_HTTPS_PORT:-443}"
}

supervised() { sv_running && [ -n "$(sv_state gateway)" ]; }

stop() {
  local was=1
  if supervised; then
    stop_program gateway
    was=0
  fi
  stop_unsupervised && was=0
  if [ $was -eq 0 ]; then info "gateway: stopped"; else info "gateway: not running"; fi
}

stop_unsupervised() {
  # An nginx started by an older gateway.sh (daemonized, not supervised); 1 if there is none.
  local pid
  if supervised || ! pid=$(running_pid); then
    return 1
  fi
  # QUIT: stop accepting, finish what is in flight (15 s at most), then exit.
  stop_process "$pid" QUIT 15
  rm -f "$PID_FILE"
  info "gateway: stopped the unsupervised nginx (pid $pid)"
}

status() {
  local pid code down=0 state=""
  sv_running && state=$(sv_state gateway)
  if [ "$state" = RUNNING ] && pid=$(running_pid); then
    printf '  %-16s running (pid %s, supervised)\n' gateway "$pid"
  else
    printf '  %-16s %s (see %s)\n' gateway "${state:-DOWN}" "$ERROR_LOG"
    return 1
  fi
  for path in /health /health/user /health/order /health/notification; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$BASE_URL$path" 2>/dev/null) || code=000
    printf '  %-16s %s %s\n' "$([ "$code" = 200 ] && echo ok || echo FAILING)" "$code" "$BASE_URL$path"
    [ "$path" = /health ] && [ "$code" != 200 ] && down=1
  done
  return $down
}

main() {
  case "${1:-}" in
    start | reload) start ;;
    stop) stop ;;
    status) status ;;
    test)
      ensure_nginx
      render
      check_config
      info "nginx accepts $CONF"
      ;;
    render) render ;;
    reopen)
      running_pid >/dev/null || die "the gateway is not running"
      nginx_cmd -s reopen
      ;;
    *) die "usage: $0 start | reload | stop | status | test | render | reopen" ;;
  esac
}

main "$@"
