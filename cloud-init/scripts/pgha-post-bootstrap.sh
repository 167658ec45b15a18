#!/bin/sh
# Patroni's bootstrap.post_bootstrap: runs once, on the member that initialises
# the cluster, with a superuser connection string as its only argument. Creates
# the role postgres_exporter logs in as (peer authentication over the local
# socket as the OS user prometheus, see pg_hba): pg_monitor and nothing else.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'prometheus') THEN
    CREATE ROLE prometheus LOGIN;
  END IF;
END
$$;
GRANT pg_monitor TO prometheus;
SQL
