#!/bin/sh
# Restores this node's PGDATA from a pgBackRest repository and brings it up to
# a primary, for Patroni to adopt (ops/restore.ts drives the whole cluster):
#   pgha-restore <stanza> <repository index> <data dir> <bin dir> [<target time>]
# Run as root with Patroni stopped. With a target time (a PostgreSQL timestamp,
# e.g. "2026-12-02 10:15:00+00") recovery stops just before the first commit
# after it; without one it replays every WAL segment the repository holds.
# The restore goes into <data dir>.restore beside the live directory, and
# PostgreSQL is started there directly (pg_ctl): only once it has promoted is
# the old directory replaced. A target recovery cannot reach, or a repository
# that fails, leaves the node's data as it was.
set -eu
stanza=$1
repo=$2
data=$3
bin=$4
target=${5:-}
staging=$data.restore
if systemctl is-active --quiet patroni.service; then
  echo "pgha-restore: patroni.service is running on this node; stop it first" >&2
  exit 1
fi
as_postgres() { runuser -u postgres -- "$@"; }
running() { as_postgres "$bin/pg_ctl" -D "$1" status >/dev/null 2>&1; }
log=$(mktemp /tmp/pgha-restore.XXXXXX)
chown postgres "$log"
fail() {
  echo "pgha-restore: $1" >&2
  tail -n 20 "$log" >&2
  if running "$staging"; then as_postgres "$bin/pg_ctl" -D "$staging" -m immediate -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$staging"
  echo "pgha-restore: $data is unchanged" >&2
  exit 1
}
if [ -f "$data/postmaster.pid" ] && running "$data"; then
  as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop
fi
rm -rf "$staging"
install -d -o postgres -g postgres -m 0700 "$staging"
if [ -n "$target" ]; then
  as_postgres pgbackrest --stanza="$stanza" --repo="$repo" --pg1-path="$staging" --type=time --target="$target" --target-action=promote restore >"$log" 2>&1 ||
    fail "pgbackrest restore failed"
else
  as_postgres pgbackrest --stanza="$stanza" --repo="$repo" --pg1-path="$staging" --type=default restore >"$log" 2>&1 || fail "pgbackrest restore failed"
fi
# Patroni's postgresql.conf names pg_hba.conf and pg_ident.conf inside <data dir>; the restored copies are in staging.
# The new timeline's history file and first WAL are archived from staging (a later restore through this point needs
# them), so archive-push must read them there, not in pgbackrest.conf's pg1-path.
archive="pgbackrest --stanza=$stanza --pg1-path=$staging archive-push %p"
as_postgres "$bin/pg_ctl" -D "$staging" -l "$log" -w -t 3600 \
  -o "-c hba_file=$staging/pg_hba.conf -c ident_file=$staging/pg_ident.conf -c 'archive_command=$archive'" start ||
  fail "PostgreSQL did not start on the restored data"
waited=0
until [ "$(as_postgres psql -X -q -t -A -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ]; do
  # For example "recovery ended before configured recovery target was reached": no commit follows the target.
  running "$staging" || fail "PostgreSQL stopped during recovery"
  [ "$waited" -lt 3600 ] || fail "still in recovery after ${waited} s"
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
as_postgres "$bin/pg_ctl" -D "$staging" -m fast -w stop
rm -rf "$data"
mv "$staging" "$data"
rm -f "$log"
echo "pgha-restore: $data restored from repo$repo${target:+ to $target} and promoted"
