#!/bin/sh
# The backup timers' command (pgha-backup-full.service, pgha-backup-diff.service),
# run as postgres on every database node:
#   pgha-backup <stanza> full|diff <repository index> ...
# Backs up only where PostgreSQL runs as the primary: the timers fire on every
# member, so whichever is the primary when they fire takes the backup, after a
# failover too. Each repository gets its own backup, one after the other; a
# repository out of reach does not stop the others, but fails the unit.
set -u
stanza=$1
type=$2
shift 2
if ! in_recovery=$(psql -X -q -t -A -d postgres -c 'SELECT pg_is_in_recovery()' 2>&1); then
  echo "pgha-backup: PostgreSQL is not running here; nothing to back up ($in_recovery)"
  exit 0
fi
if [ "$in_recovery" != "f" ]; then
  echo "pgha-backup: this member is a standby; the primary takes the backup"
  exit 0
fi
# Just after a promotion pg_control keeps the old timeline until the promotion's checkpoint ends, and pgBackRest
# refuses to start ("WAL timeline 4 does not match pg_control timeline 3", the backup-during-failover drill's
# first backup on the new primary): checkpoint first.
stale=$(psql -X -q -t -A -d postgres -c "SELECT (SELECT timeline_id FROM pg_control_checkpoint()) <> ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int" 2>&1)
if [ "$stale" = "t" ]; then
  echo "pgha-backup: the last checkpoint predates this primary's promotion; checkpointing first"
  psql -X -q -d postgres -c CHECKPOINT || echo "pgha-backup: CHECKPOINT failed; pgBackRest will say why it cannot start" >&2
fi
# A backup belongs to the primary. Once this member is a standby, or its PostgreSQL has not answered for a minute,
# the backup is abandoned: the script exits and systemd stops what is left in the unit's control group. pgBackRest
# aborts by itself when its connection drops, but then waits up to protocol-timeout (30 min) for its worker processes:
# a demoted primary's backup was seen still running 6 min after its host came back (backup-during-failover drill).
role_check_seconds=10
role_misses_max=6
watch_role() {
  # Stopped by the script when the backups are over: the nap goes too, so the unit's control group is empty when the
  # script exits (in the lab's machines systemd then and again missed a leftover's exit and waited out TimeoutStopSec).
  trap 'kill "$nap" 2>/dev/null; wait "$nap"; exit 0' TERM
  misses=0
  while :; do
    sleep "$role_check_seconds" &
    nap=$!
    wait "$nap"
    if state=$(PGCONNECT_TIMEOUT=5 PGOPTIONS='-c statement_timeout=5s' psql -X -q -t -A -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null); then
      misses=0
      if [ "$state" = "t" ]; then
        echo "pgha-backup: this member is a standby now; the $type backup is abandoned" >&2
        break
      fi
    else
      misses=$((misses + 1))
      if [ "$misses" -ge "$role_misses_max" ]; then
        echo "pgha-backup: PostgreSQL has not answered for $((role_check_seconds * role_misses_max)) s; the $type backup is abandoned" >&2
        break
      fi
    fi
  done
  kill -USR1 $$
}
trap 'exit 1' USR1
watch_role &
watcher=$!
failed=
for repo in "$@"; do
  # In the background, so that the watcher's signal interrupts the wait.
  pgbackrest --stanza="$stanza" --repo="$repo" --type="$type" backup &
  if ! wait $!; then
    echo "pgha-backup: the $type backup to repo$repo failed" >&2
    failed="$failed repo$repo"
  fi
done
kill "$watcher" 2>/dev/null
wait "$watcher"
if [ -n "$failed" ]; then
  echo "pgha-backup: failed:$failed" >&2
  exit 1
fi
