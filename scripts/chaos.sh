#!/usr/bin/env bash
# The fault suite (docs/reliability.md): the host-mode stack with its own fault proxy in front of
# PostgreSQL, RabbitMQ, Redis and both user_api instances, a load of careful clients through the
# gateway, one fault at a time, then the invariants (lost, duplicate orders and emails, stuck,
# HTTP 500, clients that gave up: all 0) and the negative control (must report lost > 0).
#   ./scripts/chaos.sh            every fault (about 10-15 min)
#   ./scripts/chaos.sh --quick    kill -9 of an order_api instance, PostgreSQL and RabbitMQ
#                                 outages, the negative control (about 3 min; CI runs it)
#   ./scripts/chaos.sh --only "RabbitMQ black hole 15 s" …   named faults (tests/chaos/faults.py)
#   ./scripts/chaos.sh --rate 0 / CHAOS_RATE_PER_S=8   the load's pace (default 4 new orders/s,
#                                 below the delivery rate, so backlogs can drain; 0 = unpaced)
# It (re)starts the stack with ./scripts/deploy.sh local and stops it at the end. Like deploy.sh
# it takes the machine's fixed ports: run it under the stack lock where others share the host.
# Faults go only into what the suite owns: its proxy, its own RabbitMQ node and PostgreSQL
# cluster on free ports (which the stack uses for the run), its SMTP front, processes it signals
# by pid. The machine's PostgreSQL, Redis and RabbitMQ are never stopped. Report: var/chaos/report.md.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_venv

# The proxy's ports: free ones, picked now (fixed ones would collide with test servers).
free_port() { "$PY" -c 'from tests.net import free_port; print(free_port())'; }
CONTROL_PORT="${CHAOS_PROXY_CONTROL_PORT:-$(free_port)}"
PG_PROXY_PORT="${CHAOS_PG_PORT:-$(free_port)}"
AMQP_PROXY_PORT="${CHAOS_AMQP_PORT:-$(free_port)}"
AMQP_NEGATIVE_PORT="${CHAOS_AMQP_NEGATIVE_PORT:-$(free_port)}"
REDIS_PROXY_PORT="${CHAOS_REDIS_PORT:-$(free_port)}"
USER1_PROXY_PORT="${CHAOS_USER_API_1_PORT:-$(free_port)}"
USER2_PROXY_PORT="${CHAOS_USER_API_2_PORT:-$(free_port)}"
SINK_SMTP_PORT=$(free_port) SMTP_FRONT_PORT=$(free_port) SMTP_CONTROL_PORT=$(free_port)
export CHAOS_MAILDIR="$ROOT/var/chaos/mail"
# The suite's own RabbitMQ node (tests/chaos/rabbit_node.py): the one the stack uses for the run,
# so it may crash it and raise its memory alarm; the machine's RabbitMQ is left alone.
export CHAOS_RABBIT_BASE="$ROOT/var/chaos/rabbit" CHAOS_RABBIT_NODE="${CHAOS_RABBIT_NODE:-chaos@localhost}"
CHAOS_RABBIT_PORT=$(free_port) CHAOS_RABBIT_DIST_PORT=$(free_port) CHAOS_RABBIT_MANAGEMENT_PORT=$(free_port)
export CHAOS_RABBIT_PORT CHAOS_RABBIT_DIST_PORT CHAOS_RABBIT_MANAGEMENT_PORT
# And its own PostgreSQL cluster (tests/chaos/pg_cluster.py, run as the postgres system user, so
# its data lives under /tmp): the stack's databases for the run, so a real server crash is possible.
CHAOS_PG_PORT=$(free_port)
export CHAOS_PG_BASE="${TMPDIR:-/tmp}/chaos-pg.$$" CHAOS_PG_PORT
REPORT="${CHAOS_REPORT:-$ROOT/var/chaos/report.md}"
mkdir -p "$LOG_DIR" "$(dirname "$REPORT")"

proxy_pid="" sink_pid="" front_pid="" rabbit_started="" pg_started=""
cleanup() {
  "$ROOT/scripts/deploy.sh" stop >/dev/null 2>&1 || warn "deploy.sh stop failed"
  if [ -n "$pg_started" ]; then
    "$PY" -m tests.chaos.pg_cluster stop >/dev/null 2>&1 || warn "could not stop the suite's PostgreSQL"
    rm -rf "$CHAOS_PG_BASE"
  fi
  if [ -n "$rabbit_started" ]; then
    "$PY" -m tests.chaos.rabbit_node stop >/dev/null 2>&1 || warn "could not stop the suite's RabbitMQ node"
  fi
  local pid
  for pid in "$proxy_pid" "$front_pid" "$sink_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

step "the suite's RabbitMQ node $CHAOS_RABBIT_NODE (:$CHAOS_RABBIT_PORT, management :$CHAOS_RABBIT_MANAGEMENT_PORT)"
rm -rf "$CHAOS_RABBIT_BASE"
mkdir -p "$CHAOS_RABBIT_BASE"
rabbit_started=1
"$PY" -m tests.chaos.rabbit_node start || die "the suite's RabbitMQ node did not start; see $CHAOS_RABBIT_BASE/log"

step "the suite's PostgreSQL cluster (:$CHAOS_PG_PORT, $CHAOS_PG_BASE)"
pg_started=1
"$PY" -m tests.chaos.pg_cluster start || die "the suite's PostgreSQL did not start; see $CHAOS_PG_BASE/server.log"

step "fault proxy (control on 127.0.0.1:$CONTROL_PORT)"
"$PY" -m tests.chaos.proxy --control "$CONTROL_PORT" \
  "pg=$PG_PROXY_PORT:127.0.0.1:$CHAOS_PG_PORT" \
  "amqp=$AMQP_PROXY_PORT:127.0.0.1:$CHAOS_RABBIT_PORT" \
  "amqp_negative=$AMQP_NEGATIVE_PORT:127.0.0.1:$CHAOS_RABBIT_PORT" \
  "redis=$REDIS_PROXY_PORT:${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}" \
  "user_api_1=$USER1_PROXY_PORT:127.0.0.1:${USER_API_PORT:-8081}" \
  "user_api_2=$USER2_PROXY_PORT:127.0.0.1:${USER_API_PORT_2:-8091}" \
  >>"$LOG_DIR/chaos-proxy.log" 2>&1 &
proxy_pid=$!
wait_port 127.0.0.1 "$CONTROL_PORT" 15 || die "the fault proxy did not start; see $LOG_DIR/chaos-proxy.log"

# The direct addresses, for the suite's own measurements (never through the proxy).
export CHAOS_ORDERS_DSN="postgresql://postgres@127.0.0.1:$CHAOS_PG_PORT/${ORDER_DB_NAME:-orders}"
export CHAOS_DIRECT_AMQP_URL="amqp://guest:guest@127.0.0.1:$CHAOS_RABBIT_PORT/"
export CHAOS_RABBITMQ_MANAGEMENT_URL="http://guest:guest@127.0.0.1:$CHAOS_RABBIT_MANAGEMENT_PORT"
export CHAOS_NEGATIVE_AMQP_URL="amqp://guest:guest@127.0.0.1:$AMQP_NEGATIVE_PORT/"
export CHAOS_PROXY_URL="http://127.0.0.1:$CONTROL_PORT"

step "stopping a stack that may be running"
"$ROOT/scripts/deploy.sh" stop >>"$LOG_DIR/chaos-deploy.log" 2>&1 || true
# Processes of a stack that was just stopped may still be draining (SHUTDOWN_DRAIN_S, requests in
# flight): wait for the stack's fixed ports to be free rather than fail on the first look.
for port in "${USER_API_PORT:-8081}" "${USER_API_PORT_2:-8091}" "${ORDER_API_PORT:-8082}" \
  "${ORDER_API_PORT_2:-8092}" "${NOTIFIER_PORT:-8083}" "${SMTP_SINK_HTTP_PORT:-8025}"; do
  for _ in $(seq 1 60); do port_open 127.0.0.1 "$port" || break; sleep 0.5; done
  port_open 127.0.0.1 "$port" && die "port $port is still taken by another process ($(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1)); is another stack running outside the lock?"
done

step "the suite's SMTP sink (:${SMTP_SINK_HTTP_PORT:-8025}, $CHAOS_MAILDIR) behind its SMTP front (451/550 on demand)"
# The sink creates the Maildir (tmp/, new/, cur/) only where no folder exists yet.
rm -rf "$CHAOS_MAILDIR"
mkdir -p "$(dirname "$CHAOS_MAILDIR")"
"$PY" -m notifier.smtp_sink --port "$SINK_SMTP_PORT" --http-port "${SMTP_SINK_HTTP_PORT:-8025}" \
  --maildir "$CHAOS_MAILDIR" >>"$LOG_DIR/chaos-smtp-sink.log" 2>&1 &
sink_pid=$!
"$PY" -m tests.chaos.smtp_front --port "$SMTP_FRONT_PORT" --upstream-port "$SINK_SMTP_PORT" \
  --control "$SMTP_CONTROL_PORT" >>"$LOG_DIR/chaos-smtp-front.log" 2>&1 &
front_pid=$!
wait_port 127.0.0.1 "$SMTP_CONTROL_PORT" 15 || die "the SMTP front did not start; see $LOG_DIR/chaos-smtp-front.log"
wait_port 127.0.0.1 "$SINK_SMTP_PORT" 15 || die "the SMTP sink did not start; see $LOG_DIR/chaos-smtp-sink.log"
export CHAOS_SMTP_CONTROL_URL="http://127.0.0.1:$SMTP_CONTROL_PORT"

step "the stack behind the fault proxy"
# Every service reaches its dependencies through the proxy (RabbitMQ: the suite's own node); the clients may go fast (rate limits
# up), and registration is cheap (bcrypt cost 4: throw-away accounts).
export DB_HOST=127.0.0.1 DB_USERNAME=postgres DB_PASSWORD="" DB_SSLMODE=disable
export DB_PORT="$PG_PROXY_PORT" RABBITMQ_PORT="$AMQP_PROXY_PORT" REDIS_PORT="$REDIS_PROXY_PORT"
export RABBITMQ_HOST=127.0.0.1 RABBITMQ_USERNAME=guest RABBITMQ_PASSWORD=guest RABBITMQ_VHOST=/
export USER_SERVICE_URL="http://127.0.0.1:$USER1_PROXY_PORT,http://127.0.0.1:$USER2_PROXY_PORT"
export GATEWAY_API_RATE=100000r/s GATEWAY_API_BURST=100000 GATEWAY_LOGIN_RATE=60000r/m GATEWAY_LOGIN_BURST=1000
export BCRYPT_ROUNDS=4 LOGIN_MAX_ATTEMPTS_PER_IP=100000
# The workers send through the SMTP front (deploy.sh starts no sink of its own then); retries of
# a deferred email are capped at 30 s so a run's backlog drains in minutes.
export SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_FRONT_PORT" WORKER_MAX_BACKOFF_MS=30000
"$ROOT/scripts/deploy.sh" local >>"$LOG_DIR/chaos-deploy.log" 2>&1 ||
  { tail -n 40 "$LOG_DIR/chaos-deploy.log" >&2; die "deploy.sh local failed; see $LOG_DIR/chaos-deploy.log"; }

step "faults under load"
"$PY" -m tests.chaos.runner --report "$REPORT" "$@"
