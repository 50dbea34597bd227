#!/usr/bin/env bash
# Back up every service database and the RabbitMQ definitions into one timestamped folder.
#   ./scripts/backup.sh                   -> $BACKUP_DIR/20261201T030000Z/
#
# In the folder: <role>.dump per database (pg_dump -Fc: users, orders, notifications, named by
# USER_DB_NAME, ORDER_DB_NAME, NOTIFICATION_DB_NAME as the services read them), rabbitmq.json
# (rabbitmqctl export_definitions, else the management API), manifest.tsv (every file's sha256,
# every table's row count as the dump holds it) and SHA256SUMS (`sha256sum -c SHA256SUMS`).
# Where a pgBackRest repository is configured (PGBACKREST_STANZA), a pgBackRest backup of the
# whole cluster is taken as well (point-in-time recovery; docs/runbooks.md#backup-and-restore).
# The folder appears only once complete; backups older than BACKUP_RETENTION_DAYS are pruned,
# never the newest. scripts/restore.sh FOLDER restores one.
#
# Variables (the environment wins over .env): DB_HOST DB_PORT DB_USERNAME DB_PASSWORD,
# the three *_DB_NAME, BACKUP_DIR (var/backups), BACKUP_RETENTION_DAYS (7), RABBITMQ_HOST,
# RABBITMQ_USERNAME, RABBITMQ_PASSWORD, RABBITMQ_MANAGEMENT_PORT (15672), BACKUP_RABBITMQ
# (auto | required | off), PGBACKREST_STANZA, PGBACKREST_TYPE (incr), PGBACKREST_USER (postgres;
# pgBackRest's own settings, e.g. PGBACKREST_CONFIG, come from its configuration or environment).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
load_env

BACKUP_DIR="${BACKUP_DIR:-$ROOT/var/backups}"
RETENTION_DAYS="${BACKUP_RETENTION_DAYS:-7}"
export PGHOST="${DB_HOST:-127.0.0.1}" PGPORT="${DB_PORT:-5432}" PGUSER="${DB_USERNAME:-postgres}"
[ -z "${DB_PASSWORD:-}" ] || export PGPASSWORD="$DB_PASSWORD"
case "$RETENTION_DAYS" in '' | *[!0-9]*) die "BACKUP_RETENTION_DAYS must be a number of days" ;; esac

databases() { # role|name — the service databases, as the services name them
  echo "user|${USER_DB_NAME:-users}"
  echo "order|${ORDER_DB_NAME:-orders}"
  echo "notification|${NOTIFICATION_DB_NAME:-notifications}"
}

row_counts() { # dump — "schema.table<TAB>rows" for every table in the dump, from its COPY blocks
  pg_restore --data-only --file=- "$1" | awk '
    /^COPY / { table = $2; rows = 0; inside = 1; next }
    inside && /^\\\.$/ { print table "\t" rows; inside = 0; next }
    inside { rows++ }'
}

rabbitmq_definitions() { # file — rabbitmqctl where this host runs the broker, else the HTTP API
  local out=$1 host="${RABBITMQ_HOST:-127.0.0.1}" port="${RABBITMQ_MANAGEMENT_PORT:-15672}"
  if command -v rabbitmqctl >/dev/null && { [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; } &&
    as_root rabbitmqctl -q export_definitions - >"$out" 2>/dev/null && [ -s "$out" ]; then
    echo rabbitmqctl
    return 0
  fi
  # RabbitMQ's built-in development user's password is its name (as RabbitSettings defaults).
  local user="${RABBITMQ_USERNAME:-guest}"
  local password="${RABBITMQ_PASSWORD:-$user}"
  if command -v curl >/dev/null; then
    curl -fsS --max-time 30 -o "$out" -u "$user:$password" "http://$host:$port/api/definitions" || return 1
  else
    # Images without curl (the compose backup service runs in postgres'): bash's own TCP.
    http_get "$host" "$port" /api/definitions "$user:$password" >"$out" || return 1
  fi
  [ -s "$out" ] && echo management-api
}

http_get() { # host port path user:password — the body of a 200 answer (HTTP/1.0: never chunked)
  local status line
  exec 3<>"/dev/tcp/$1/$2" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Basic %s\r\n\r\n' "$3" "$1" \
    "$(printf '%s' "$4" | base64 -w0)" >&3
  IFS=' ' read -r _ status _ <&3 || status=none
  if [ "$status" != 200 ]; then
    exec 3<&-
    return 1
  fi
  while IFS= read -r line <&3 && [ -n "${line%$'\r'}" ]; do :; done
  cat <&3
  exec 3<&-
}

sums() { # folder [find tests] — "sha256  file" for the folder's files (not SHA256SUMS itself)
  local folder=$1
  shift
  (cd "$folder" && find . -maxdepth 1 -type f ! -name SHA256SUMS ! -name .sums "$@" -printf '%f\n' | sort | xargs -r sha256sum)
}

prune() { # keep the newest backup whatever its age; drop complete backups older than the retention
  local newest old
  newest=$(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name '20*Z' | sort | tail -n 1)
  while IFS= read -r old; do
    if [ -z "$old" ] || [ "$old" = "$newest" ] || [ ! -f "$old/manifest.tsv" ]; then continue; fi
    rm -rf -- "$old"
    info "pruned $(basename "$old") (older than $RETENTION_DAYS days)"
  done < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name '20*Z' -mmin "+$((RETENTION_DAYS * 1440))")
}

main() {
  command -v pg_dump >/dev/null || die "pg_dump is missing (Debian: apt-get install postgresql-client)"
  local stamp folder partial started=$SECONDS
  mkdir -p "$BACKUP_DIR"
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  # Two runs within a second (a retry at once): the second takes the next second's name.
  while [ -e "$BACKUP_DIR/$stamp" ] || [ -e "$BACKUP_DIR/.$stamp.partial" ]; do
    sleep 1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
  done
  folder="$BACKUP_DIR/$stamp"
  partial="$BACKUP_DIR/.$stamp.partial"
  rm -rf -- "$partial"
  mkdir -m 0700 "$partial"
  trap 'rm -rf -- "$partial"' EXIT
  {
    printf 'backup\t%s\n' "$stamp"
    printf 'server\t%s:%s\t%s\n' "$PGHOST" "$PGPORT" "$(psql -d postgres -XAtc 'SHOW server_version')"
  } >"$partial/manifest.tsv"

  local role name file
  while IFS='|' read -r role name; do
    file="$role.dump"
    step "database $name"
    pg_dump --format=custom --compress=6 --dbname="$name" --file="$partial/$file" ||
      die "pg_dump of $name failed"
    printf 'database\t%s\t%s\t%s\t%s\n' "$role" "$name" "$file" "$(stat -c %s "$partial/$file")" >>"$partial/manifest.tsv"
    row_counts "$partial/$file" | while IFS=$'\t' read -r table rows; do
      printf 'table\t%s\t%s\t%s\n' "$role" "$table" "$rows"
    done >>"$partial/manifest.tsv"
    info "$(grep -c "^table	$role	" "$partial/manifest.tsv") tables, $(stat -c %s "$partial/$file") bytes"
  done < <(databases)

  step "RabbitMQ definitions"
  local how
  if [ "${BACKUP_RABBITMQ:-auto}" = off ]; then
    info "skipped (BACKUP_RABBITMQ=off)"
  elif how=$(rabbitmq_definitions "$partial/rabbitmq.json"); then
    printf 'rabbitmq\trabbitmq.json\t%s\n' "$how" >>"$partial/manifest.tsv"
    info "exported with $how"
  elif [ "${BACKUP_RABBITMQ:-auto}" = required ]; then
    die "could not export the RabbitMQ definitions (rabbitmqctl or the management API)"
  else
    rm -f "$partial/rabbitmq.json"
    warn "RabbitMQ definitions not exported (no rabbitmqctl here, management API unreachable); the services declare their queues again at start"
  fi

  if [ -n "${PGBACKREST_STANZA:-}" ]; then
    step "pgBackRest ($PGBACKREST_STANZA, ${PGBACKREST_TYPE:-incr})"
    # pgBackRest runs as the cluster's owner (its repository and the archive_command's files are
    # that user's); as root, through runuser.
    local as_owner=()
    if [ "$(id -u)" -eq 0 ] && id "${PGBACKREST_USER:-postgres}" >/dev/null 2>&1; then
      as_owner=(runuser -u "${PGBACKREST_USER:-postgres}" --)
    fi
    "${as_owner[@]}" pgbackrest --stanza="$PGBACKREST_STANZA" --type="${PGBACKREST_TYPE:-incr}" backup ||
      die "pgbackrest backup failed"
    "${as_owner[@]}" pgbackrest --stanza="$PGBACKREST_STANZA" --output=json info >"$partial/pgbackrest-info.json"
    printf 'pgbackrest\t%s\tpgbackrest-info.json\n' "$PGBACKREST_STANZA" >>"$partial/manifest.tsv"
  fi

  # Every file's sum in the manifest, then SHA256SUMS over everything, the manifest included.
  sums "$partial" ! -name manifest.tsv | while read -r sum file; do
    printf 'sha256\t%s\t%s\n' "$file" "$sum"
  done >>"$partial/manifest.tsv"
  sums "$partial" >"$partial/.sums"
  mv -- "$partial/.sums" "$partial/SHA256SUMS"
  mv -- "$partial" "$folder"
  trap - EXIT
  step "backup complete: $folder ($((SECONDS - started)) s)"
  prune
}

main "$@"
