-- The service databases (users, orders, notifications) on one server, and optionally the login
-- role that owns them. The one definition for both ways of running the system:
--   compose:   docker-entrypoint-initdb.d runs it once, on an empty data volume;
--   host mode: scripts/deploy.sh (ensure_roles) runs it with psql when DB_USERNAME is not postgres.
-- Safe to run again: what exists is kept (only the role's password is set again).
-- Read from the environment (psql's \getenv, PostgreSQL 15 or later):
--   USER_DB_NAME, ORDER_DB_NAME, NOTIFICATION_DB_NAME   the names (default users, orders, notifications)
--   DB_ROLE, DB_ROLE_PASSWORD                           a login role to own them; unset: the caller owns them
\set ON_ERROR_STOP on

\getenv user_db USER_DB_NAME
\if :{?user_db}
\else
  \set user_db users
\endif
\getenv order_db ORDER_DB_NAME
\if :{?order_db}
\else
  \set order_db orders
\endif
\getenv notification_db NOTIFICATION_DB_NAME
\if :{?notification_db}
\else
  \set notification_db notifications
\endif

\getenv role DB_ROLE
\if :{?role}
  \set own_role true
  \getenv role_password DB_ROLE_PASSWORD
  \if :{?role_password}
  \else
    \set role_password ''
  \endif
  SELECT format('CREATE ROLE %I LOGIN', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
  -- An empty password clears it (PostgreSQL refuses to set an empty one).
  SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', nullif(:'role_password', '')) \gexec
\else
  \set own_role false
  SELECT current_user AS role \gset
\endif

SELECT format('CREATE DATABASE %I OWNER %I', name, :'role')
FROM (VALUES (:'user_db'), (:'order_db'), (:'notification_db')) AS wanted(name)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name) \gexec

\if :own_role
  SELECT format('GRANT ALL ON DATABASE %I TO %I', name, :'role')
  FROM (VALUES (:'user_db'), (:'order_db'), (:'notification_db')) AS wanted(name) \gexec
  -- A database created earlier by another account: let the role use what is already in it.
  \set grants 'SELECT format(''GRANT ALL ON SCHEMA public TO %1$I; GRANT ALL ON ALL TABLES IN SCHEMA public TO %1$I; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO %1$I'', :''role'')'
  \connect :"user_db"
  :grants \gexec
  \connect :"order_db"
  :grants \gexec
  \connect :"notification_db"
  :grants \gexec
\endif
