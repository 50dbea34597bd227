#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into empty databases, then check every table's row
# count against the backup's manifest.
#   ./scripts/restore.sh BACKUP_FOLDER [--force] [--with-rabbitmq]
#
# The databases restored into are the ones the services are configured with now (USER_DB_NAME,
# ORDER_DB_NAME, NOTIFICATION_DB_NAME; the environment wins over .env), so a backup can be
# restored under other names. A database that is missing is created; one that holds tables is
# refused unless --force, which drops and re-creates it (stop the services first).
# --with-rabbitmq imports the RabbitMQ definitions too (rabbitmqctl import_definitions).
# Exit status 0 only when every file matched its checksum and every table has its rows.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
load_env

export PGHOST="${DB_HOST:-127.0.0.1}" PGPORT="${DB_PORT:-5432}" PGUSER="${DB_USERNAME:-postgres}"
[ -z "${DB_PASSWORD:-}" ] || export PGPASSWORD="$DB_PASSWORD"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -At)

target_name() { # role — the database the services use for it now
  case "$1" in
    user) echo "${USER_DB_NAME:-users}" ;;
    order) echo "${ORDER_DB_NAME:-orders}" ;;
    notification) echo "${NOTIFICATION_DB_NAME:-notifications}" ;;
    *) die "unknown database role '$1' in the manifest" ;;
  esac
}

prepare_database() { # name force — leave an empty database called name, or refuse
  local name=$1 force=$2 exists tables
  exists=$("${PSQL[@]}" -d postgres -v db="$name" <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db';
SQL
)
  if [ "$exists" = 1 ]; then
    tables=$("${PSQL[@]}" -d "$name" -c "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
    if [ "$tables" != 0 ]; then
      [ "$force" = 1 ] || die "database $name holds $tables table(s); restore into an empty database, or pass --force to replace it"
      warn "dropping database $name (--force)"
      "${PSQL[@]}" -d postgres -v db="$name" <<'SQL'
SELECT format('DROP DATABASE %I WITH (FORCE)', :'db') \gexec
SQL
      exists=0
    fi
  fi
  if [ "$exists" != 1 ]; then
    "${PSQL[@]}" -d postgres -v db="$name" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
  fi
}

check_counts() { # manifest role name — compare each table's rows; prints mismatches, returns 1 on any
  local manifest=$1 role=$2 name=$3 bad=0 table rows got
  while IFS=$'\t' read -r table rows; do
    got=$("${PSQL[@]}" -d "$name" -v t="$table" <<'SQL'
SELECT format('SELECT count(*) FROM %s', (:'t')::regclass) \gexec
SQL
) || got="missing"
    if [ "$got" != "$rows" ]; then
      warn "$name: $table has $got rows, the backup $rows"
      bad=1
    fi
  done < <(awk -F'\t' -v role="$role" '$1 == "table" && $2 == role { print $3 "\t" $4 }' "$manifest")
  return $bad
}

main() {
  local backup="" force=0 with_rabbitmq=0 arg
  for arg in "$@"; do
    case "$arg" in
      --force) force=1 ;;
      --with-rabbitmq) with_rabbitmq=1 ;;
      -*) die "unknown option $arg; usage: $0 BACKUP_FOLDER [--force] [--with-rabbitmq]" ;;
      *) [ -z "$backup" ] || die "one backup folder at a time"; backup=$arg ;;
    esac
  done
  [ -n "$backup" ] || die "usage: $0 BACKUP_FOLDER [--force] [--with-rabbitmq]"
  if [ ! -f "$backup/manifest.tsv" ] || [ ! -f "$backup/SHA256SUMS" ]; then
    die "$backup is not a backup made by scripts/backup.sh (no manifest.tsv and SHA256SUMS)"
  fi
  local started=$SECONDS manifest="$backup/manifest.tsv"

  step "checking the files against their checksums"
  (cd "$backup" && sha256sum --quiet -c SHA256SUMS) || die "$backup is damaged: a file does not match SHA256SUMS"

  # Refuse before touching anything: every target must be empty (or --force).
  local role name file target failed=0
  while IFS=$'\t' read -r role name file; do
    prepare_database "$(target_name "$role")" "$force"
  done < <(awk -F'\t' '$1 == "database" { print $2 "\t" $3 "\t" $4 }' "$manifest")

  while IFS=$'\t' read -r role name file; do
    target=$(target_name "$role")
    step "restoring $name into $target"
    # Owners and grants are the restoring role's: the same backup restores into another
    # deployment (host mode, compose, a Kubernetes cluster) whose roles differ.
    pg_restore --exit-on-error --no-owner --no-acl --jobs="${RESTORE_JOBS:-2}" --dbname="$target" "$backup/$file" ||
      die "pg_restore into $target failed"
    if check_counts "$manifest" "$role" "$target"; then
      info "$(awk -F'\t' -v r="$role" '$1 == "table" && $2 == r { n++; s += $4 } END { print n " tables, " s " rows" }' "$manifest"): every count matches"
    else
      failed=1
    fi
  done < <(awk -F'\t' '$1 == "database" { print $2 "\t" $3 "\t" $4 }' "$manifest")

  if [ "$with_rabbitmq" = 1 ]; then
    step "RabbitMQ definitions"
    [ -f "$backup/rabbitmq.json" ] || die "this backup has no RabbitMQ definitions"
    # Through standard input: the broker node, not this shell's user, would read a path.
    as_root rabbitmqctl -q import_definitions - <"$backup/rabbitmq.json" || die "rabbitmqctl import_definitions failed"
  fi

  [ "$failed" = 0 ] || die "restored, but row counts differ from the backup (above)"
  step "restore complete in $((SECONDS - started)) s"
}

main "$@"
