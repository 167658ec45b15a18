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
failed=
for repo in "$@"; do
  if ! pgbackrest --stanza="$stanza" --repo="$repo" --type="$type" backup; then
    echo "pgha-backup: the $type backup to repo$repo failed" >&2
    failed="$failed repo$repo"
  fi
done
if [ -n "$failed" ]; then
  echo "pgha-backup: failed:$failed" >&2
  exit 1
fi
