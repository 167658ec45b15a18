#!/bin/sh
# Patroni's bootstrap.post_bootstrap: runs once, on the member that initialises
# the cluster, as `pgha-post-bootstrap <stanza> <superuser connection string>`
# (Patroni appends the connection string).
# - Creates the role postgres_exporter logs in as (peer authentication over the
#   local socket as the OS user prometheus, see pg_hba): pg_monitor and nothing else.
# - Creates the pgBackRest stanza in every repository. Until it exists no WAL
#   segment can be archived; if a repository cannot be reached the bootstrap
#   fails and Patroni lets a member try again, rather than run a cluster whose
#   archive never started.
set -eu
stanza=$1
psql "$2" -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'prometheus') THEN
    CREATE ROLE prometheus LOGIN;
  END IF;
END
$$;
GRANT pg_monitor TO prometheus;
SQL
pgbackrest --stanza="$stanza" stanza-create
