#!/usr/bin/env bash
# Helpers shared by the scripts in this folder. Source it; it defines functions only.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
RUN_DIR="${RUN_DIR:-$ROOT/var/run}"
LOG_DIR="${LOG_DIR:-$ROOT/var/log}"
# supervisord of our own (not the system's /etc/supervisor instance): its configuration and one
# file per program under SUPERVISOR_DIR, its socket and pid file under RUN_DIR.
SUPERVISOR_DIR="${SUPERVISOR_DIR:-$ROOT/var/supervisor}"
SUPERVISOR_CONF="$SUPERVISOR_DIR/supervisord.conf"
SUPERVISOR_SOCK="$RUN_DIR/supervisor.sock"
# Every host-mode log is rotated by size: the current file plus LOG_BACKUPS old ones.
LOG_MAX_BYTES="${LOG_MAX_BYTES:-20MB}"
LOG_BACKUPS="${LOG_BACKUPS:-5}"

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf '\033[1;33m!!\033[0m  %s\n' "$*" >&2; }
die() { printf '\033[1;31mxx\033[0m  %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $*"
  fi
}

apt_updated=0
apt_install() {
  # Install the named Debian packages that are missing; apt-get update once per run.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  info "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  # The venv and the package (editable, with the dev extra). Cheap when already there.
  # Dependencies come from the lock (requirements/dev.txt, scripts/lock.sh), each file checked
  # against its hash; the package itself is then installed without resolving anything again.
  if [ ! -x "$PY" ]; then
    step "creating the virtualenv in $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
  fi
  local stamp="$VENV/.installed" want lock="$ROOT/requirements/dev.txt"
  want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$lock" 2>/dev/null | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing the package and its locked dependencies (requirements/dev.txt)"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q --require-hashes -r "$lock" || die "pip install --require-hashes -r $lock failed"
    local out # setuptools' editable build is chatty on stderr even with -q: shown on failure only
    out=$("$PY" -m pip install -q --no-deps -e "$ROOT" 2>&1) || { echo "$out" >&2; die "pip install -e $ROOT failed"; }
    if ! bash "$ROOT/scripts/lock.sh" --covers; then
      # setup.cfg gained a requirement the lock does not have yet: development goes on, unlocked.
      warn "installing what the lock lacks without hashes; run scripts/lock.sh and commit requirements/"
      "$PY" -m pip install -q -e "${ROOT}[dev]" || die "pip install failed"
    fi
    echo "$want" >"$stamp"
  fi
}

load_env() {
  # .env fills in what the caller's environment does not already say: a variable set by the
  # caller (a shell, CI, deploy.sh) wins over the same variable in .env. Every script means this.
  [ -f "$ROOT/.env" ] || return 0
  local exported_before
  exported_before=$(export -p)
  set -a
  # shellcheck disable=SC1091
  . "$ROOT/.env"
  set +a
  # Put the caller's values back. `declare` in a function makes locals: -g keeps them global.
  eval "$(sed -e '/^declare -[a-zA-Z]*r[a-zA-Z]* /d' -e 's/^declare -x /declare -gx /' <<<"$exported_before")"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    [ $SECONDS -ge "$deadline" ] && return 1
    sleep 0.5
  done
}

wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ $SECONDS -ge "$deadline" ] && return 1
    sleep 0.5
  done
}

ensure_postgres() {
  local host="${DB_HOST:-127.0.0.1}" port="${DB_PORT:-5432}"
  port_open "$host" "$port" && return 0
  if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
    if ! command -v pg_ctlcluster >/dev/null || [ ! -d /etc/postgresql ]; then
      info "installing PostgreSQL"
      apt_install postgresql
    fi
    local versions=(/etc/postgresql/*)
    info "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(basename "${versions[0]}")" main start || true
  fi
  wait_port "$host" "$port" 30 || die "PostgreSQL is not reachable at $host:$port; start it or set DB_HOST/DB_PORT"
}

ensure_redis() {
  local host="${REDIS_HOST:-127.0.0.1}" port="${REDIS_PORT:-6379}"
  port_open "$host" "$port" && return 0
  if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
    command -v redis-server >/dev/null || apt_install redis-server
    info "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_port "$host" "$port" 30 || die "Redis is not reachable at $host:$port; start it or set REDIS_HOST/REDIS_PORT"
}

ensure_rabbitmq() {
  local host="${RABBITMQ_HOST:-127.0.0.1}" port="${RABBITMQ_PORT:-5672}"
  if ! port_open "$host" "$port" && { [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; }; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    info "starting RabbitMQ"
    as_root rabbitmq-server -detached || true
  fi
  wait_port "$host" "$port" 90 || die "RabbitMQ is not reachable at $host:$port; start it or set RABBITMQ_HOST/RABBITMQ_PORT"
}

# --- supervision (host mode) -----------------------------------------------------------------
# Every process `deploy.sh local` starts runs under supervisord: restarted when it exits (with
# supervisord's backoff while it fails to start), its pid kept, its output in LOG_DIR/NAME.log
# rotated at LOG_MAX_BYTES. scripts/supervisor_events.py reaps what a killed program leaves
# behind and keeps RUN_DIR/NAME.pid.

sv_ctl() { supervisorctl -c "$SUPERVISOR_CONF" "$@"; }

sv_running() { [ -S "$SUPERVISOR_SOCK" ] && sv_ctl pid >/dev/null 2>&1; }

sv_quote() { # one word for supervisord's command line (shlex), with % escaped
  local word=${1//%/%%}
  printf "'%s'" "${word//\'/\'\"\'\"\'}"
}

sv_write_conf() {
  mkdir -p "$SUPERVISOR_DIR/programs" "$SUPERVISOR_DIR/env" "$RUN_DIR" "$LOG_DIR"
  # A password of its own on the socket (on top of its mode), in a file only its owner reads.
  local password
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && : >"$SUPERVISOR_CONF")
  cat >"$SUPERVISOR_CONF" <<CONF
; Generated by scripts/lib.sh (sv_write_conf); programs are in programs/*.conf.
[unix_http_server]
file=$SUPERVISOR_SOCK
chmod=0700
username=stack
password=$password

[supervisord]
logfile=$LOG_DIR/supervisord.log
logfile_maxbytes=$LOG_MAX_BYTES
logfile_backups=$LOG_BACKUPS
pidfile=$RUN_DIR/supervisord.pid
childlogdir=$LOG_DIR
directory=$ROOT
identifier=$ROOT
$([ "$(id -u)" -eq 0 ] && echo "user=root  ; said, so supervisord does not warn about it")
minfds=4096

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$SUPERVISOR_SOCK
username=stack
password=$password

[eventlistener:supervisor_events]
command=$(sv_quote "${SUPERVISOR_PYTHON:-/usr/bin/python3}") $(sv_quote "$ROOT/scripts/supervisor_events.py") --run-dir $(sv_quote "$RUN_DIR") --grace ${SV_REAP_GRACE_S:-30} --retry-fatal-after ${SV_RETRY_FATAL_S:-60}
events=PROCESS_STATE
; It calls supervisord back to start a FATAL program (supervisor.childutils reads these).
environment=SUPERVISOR_USERNAME="stack",SUPERVISOR_PASSWORD="$password"
buffer_size=1000
autorestart=true
stdout_logfile=NONE
stderr_logfile=$LOG_DIR/supervisor_events.log
stderr_logfile_maxbytes=$LOG_MAX_BYTES
stderr_logfile_backups=$LOG_BACKUPS

[include]
files=$SUPERVISOR_DIR/programs/*.conf
CONF
}

sv_start() {
  # Start supervisord if it is not running (with this shell's environment); wait for its socket.
  sv_running && return 0
  command -v supervisord >/dev/null || apt_install supervisor
  sv_write_conf
  rm -f "$SUPERVISOR_SOCK"
  supervisord -c "$SUPERVISOR_CONF" || die "supervisord did not start; see $LOG_DIR/supervisord.log"
  local _
  for _ in $(seq 1 40); do sv_running && return 0; sleep 0.25; done
  die "supervisord does not answer on $SUPERVISOR_SOCK; see $LOG_DIR/supervisord.log"
}

sv_shutdown() {
  # Stop every program (in reverse priority: the gateway first, the data stores' clients last),
  # then supervisord itself.
  sv_running || return 0
  sv_ctl shutdown >/dev/null || true
  local pid _
  pid=$(cat "$RUN_DIR/supervisord.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    # Each program has stopwaitsecs (20 s) to finish; they stop one priority after another.
    for _ in $(seq 1 480); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$SUPERVISOR_SOCK"
}

sv_program() { # [--priority N] [--stopsignal SIG] [--stderr-log FILE] [--log FILE] name command...
  # Write programs/NAME.conf. The program runs with the environment of the shell that calls
  # this (saved next to it, mode 0600: it may hold secrets), like a process started from it.
  local priority=500 stopsignal=TERM stderr_log="" log=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --priority) priority=$2; shift 2 ;;
      --stopsignal) stopsignal=$2; shift 2 ;;
      --stderr-log) stderr_log=$2; shift 2 ;;
      --log) log=$2; shift 2 ;;
      *) break ;;
    esac
  done
  local name=$1
  shift
  mkdir -p "$SUPERVISOR_DIR/programs" "$SUPERVISOR_DIR/env" "$LOG_DIR"
  local envfile="$SUPERVISOR_DIR/env/$name.env" command="" word
  (umask 077 && export -p | grep -Ev '^declare -[a-zA-Z]*r|^declare -x (PWD|OLDPWD|SHLVL|_)=' >"$envfile")
  # shellcheck disable=SC2016  # $0 and $@ are for the bash that supervisord runs
  for word in /bin/bash -c '. "$0" && exec "$@"' "$envfile" "$@"; do command+="$(sv_quote "$word") "; done
  {
    echo "[program:$name]"
    echo "command=$command"
    echo "directory=$ROOT"
    echo "priority=$priority"
    echo "autostart=true"
    echo "autorestart=true"
    # Up for 2 s counts as started; a start that fails is retried after 1 s, 2 s, 3 s … (20 tries).
    echo "startsecs=${SV_STARTSECS:-2}"
    echo "startretries=${SV_STARTRETRIES:-20}"
    echo "stopsignal=$stopsignal"
    echo "stopwaitsecs=${SV_STOPWAIT_S:-20}"
    # The whole process group: Dramatiq's workers, nginx's workers.
    echo "stopasgroup=true"
    echo "killasgroup=true"
    echo "stdout_logfile=${log:-$LOG_DIR/$name.log}"
    echo "stdout_logfile_maxbytes=$LOG_MAX_BYTES"
    echo "stdout_logfile_backups=$LOG_BACKUPS"
    if [ -n "$stderr_log" ]; then
      echo "stderr_logfile=$stderr_log"
      echo "stderr_logfile_maxbytes=$LOG_MAX_BYTES"
      echo "stderr_logfile_backups=$LOG_BACKUPS"
    else
      echo "redirect_stderr=true"
    fi
  } >"$SUPERVISOR_DIR/programs/$name.conf"
}

sv_state() { # name — RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, or nothing
  # (supervisorctl's exit status says "not running"; the state is what matters here)
  { sv_ctl status "$1" 2>/dev/null || true; } | awk -v n="$1" '$1 == n { print $2 }'
}

launch() { # [sv_program options] name command... — (re)start it under supervisord now
  sv_start
  local args=("$@") name
  while [ "${args[0]}" != "${args[0]#--}" ]; do args=("${args[@]:2}"); done
  name=${args[0]}
  sv_program "$@"
  # update adds a new or changed program (and starts it); an unchanged one needs a start.
  sv_ctl update "$name" >/dev/null
  case "$(sv_state "$name")" in
    RUNNING | STARTING) ;;
    *) sv_ctl start "$name" >/dev/null || true ;;
  esac
  info "started $name under supervisord (log $LOG_DIR/$name.log)"
}

stop_program() { # name — stop it and forget it (so a supervisord restart does not bring it back)
  sv_running || { rm -f "$SUPERVISOR_DIR/programs/$1.conf"; return 0; }
  local state
  state=$(sv_state "$1")
  [ -n "$state" ] || { rm -f "$SUPERVISOR_DIR/programs/$1.conf"; return 0; }
  sv_ctl stop "$1" >/dev/null 2>&1 || true
  rm -f "$SUPERVISOR_DIR/programs/$1.conf" "$SUPERVISOR_DIR/env/$1.env"
  sv_ctl update "$1" >/dev/null 2>&1 || true
  [ "$state" = RUNNING ] && info "stopped $1"
  return 0
}

stop_process() { # pid [signal] [seconds] — signal its process group (else it alone), wait, then KILL
  # The one stop loop: an unsupervised process (a pid file of an older deploy.sh, an nginx
  # started by an older gateway.sh, a program left by a killed supervisord) gets SIGNAL (TERM)
  # and SECONDS (10) to exit; then SIGKILL for it and whatever of its group outlived it.
  local pid=$1 signal=${2:-TERM} wait_s=${3:-10} _
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((wait_s * 4))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "pid $pid did not exit within $wait_s s of SIG$signal; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  kill -KILL -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
}

stop_pidfile() { # pidfile [signal] [seconds] — the process it names (not supervised), then the file
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    stop_process "$pid" "${2:-TERM}" "${3:-10}"
    info "stopped $(basename "$1" .pid) (pid $pid, not supervised)"
  fi
  rm -f "$1"
}
