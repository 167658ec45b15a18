#!/bin/bash
# Keeps etcd's raft leader off the PostgreSQL primary's host. When one host holds both and is lost, the new raft
# leader re-arms every lease to its full TTL, so Patroni's leader key expires about 5 s later than it would
# otherwise (docs/failover-timing.md; lab drill 1: RTO 25.9-26.7 s in the runs that lost the etcd leader with the
# primary, 21.4 s in the one that did not). A timer runs this every few seconds on each database node that is
# also an etcd member; it acts only where PostgreSQL is the primary and the local member leads.
#
# Usage: pgha-etcd-leader-away LOCAL_CLIENT_URL MEMBER...
#   MEMBER: the other members' names, the preferred new leader first (rendered from the plan's RTTs).
# etcdctl's TLS settings come from the unit's EnvironmentFile (/etc/pgha/etcdctl.env).
set -euo pipefail
local_url=$1
shift

# Not the primary (or PostgreSQL not answering): nothing to do here.
[ "$(psql -X -A -t -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] || exit 0

# etcdctl's simple output: endpoint, ID, version, DB size, is leader, ...
is_leader=$(ETCDCTL_ENDPOINTS=$local_url etcdctl endpoint status --command-timeout=3s | awk -F', ' '{print $5}')
[ "$is_leader" = true ] || exit 0

# member list: ID, status, name, peer URLs, client URLs, is learner
members=$(etcdctl member list --command-timeout=3s)
for name in "$@"; do
  line=$(awk -F', ' -v name="$name" '$3 == name && $2 == "started"' <<<"$members")
  [ -n "$line" ] || continue
  id=${line%%,*}
  url=$(awk -F', ' '{print $5}' <<<"$line")
  ETCDCTL_ENDPOINTS=$url etcdctl endpoint health --command-timeout=3s >/dev/null 2>&1 || continue
  ETCDCTL_ENDPOINTS=$local_url etcdctl move-leader "$id" --command-timeout=5s >/dev/null
  echo "pgha-etcd-leader-away: this host runs the PostgreSQL primary; etcd's raft leader moved to $name ($id)"
  exit 0
done
echo "pgha-etcd-leader-away: this host runs the PostgreSQL primary and leads etcd, and no other member is healthy" >&2
