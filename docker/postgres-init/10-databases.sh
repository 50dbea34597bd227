#!/bin/sh
# One PostgreSQL server, one database per service (users, orders, notifications), as the
# services expect. Runs once, when the postgres container starts on an empty data volume
# (docker-entrypoint-initdb.d); the services apply their own migrations at start-up.
set -eu

for database in "${USER_DB_NAME:-users}" "${ORDER_DB_NAME:-orders}" "${NOTIFICATION_DB_NAME:-notifications}"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres --set database="$database" <<'SQL'
SELECT format('CREATE DATABASE %I', :'database')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database')\gexec
SQL
done
