#!/bin/sh
# Restores this node's PGDATA from a pgBackRest repository and brings it up to
# a primary, for Patroni to adopt (ops/restore.ts drives the whole cluster):
#   pgha-restore <stanza> <repository index> <data dir> <bin dir> [<target time>]
# Run as root with Patroni stopped. With a target time (a PostgreSQL timestamp,
# e.g. "2026-12-02 10:15:00+00") recovery stops just before the first commit
# after it; without one it replays every WAL segment the repository holds.
# PostgreSQL is started directly (pg_ctl), promotes at the end of recovery and
# is stopped again with the recovery settings removed: Patroni then finds a
# primary's data directory and no cluster in etcd, and takes it as the leader.
set -eu
stanza=$1
repo=$2
data=$3
bin=$4
target=${5:-}
if systemctl is-active --quiet patroni.service; then
  echo "pgha-restore: patroni.service is running on this node; stop it first" >&2
  exit 1
fi
as_postgres() { runuser -u postgres -- "$@"; }
if [ -f "$data/postmaster.pid" ] && as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop
fi
# What the restore replaces goes entirely: a delta restore would keep files of a timeline it is leaving.
find "$data" -mindepth 1 -delete
install -d -o postgres -g postgres -m 0700 "$data"
if [ -n "$target" ]; then
  as_postgres pgbackrest --stanza="$stanza" --repo="$repo" --type=time --target="$target" --target-action=promote restore
else
  as_postgres pgbackrest --stanza="$stanza" --repo="$repo" --type=default restore
fi
log=$(mktemp /tmp/pgha-restore.XXXXXX)
chown postgres "$log"
# Recovery replays the archive before it accepts connections; -t bounds the wait, not the restore.
if ! as_postgres "$bin/pg_ctl" -D "$data" -l "$log" -w -t 3600 start; then
  cat "$log" >&2
  exit 1
fi
waited=0
until [ "$(as_postgres psql -X -q -t -A -d postgres -c 'SELECT pg_is_in_recovery()')" = "f" ]; do
  if ! as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    # For example "recovery ended before configured recovery target was reached": the target is past the archive.
    echo "pgha-restore: PostgreSQL stopped during recovery:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  if [ "$waited" -ge 3600 ]; then
    echo "pgha-restore: still in recovery after ${waited} s" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
# pgBackRest wrote the recovery settings into postgresql.auto.conf; a primary has no use for them, and a member
# that later follows another must not stop at this target.
as_postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
ALTER SYSTEM RESET restore_command;
ALTER SYSTEM RESET recovery_target_time;
ALTER SYSTEM RESET recovery_target_action;
SQL
as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop
cat "$log"
rm -f "$log"
echo "pgha-restore: $data restored from repo$repo${target:+ to $target} and promoted"
