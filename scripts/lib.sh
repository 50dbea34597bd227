#!/usr/bin/env bash
# Helpers shared by the scripts in this folder. Source it; it defines functions only.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
RUN_DIR="${RUN_DIR:-$ROOT/var/run}"
LOG_DIR="${LOG_DIR:-$ROOT/var/log}"

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
