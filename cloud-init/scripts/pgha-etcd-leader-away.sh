#!/bin/bash
# Keeps etcd's raft leader off the PostgreSQL primary's host. When one host holds both and is lost, the new raft
# leader re-arms every lease to its full TTL, so Patroni's leader key expires about 5 s later than it would
# otherwise (docs/failover-timing.md: in lab drill 1, 25.9-26.7 s in the runs that lost the etcd leader with the
# primary, 19.8-22.3 s once this moved it). The primary's upkeep runs it every few seconds on each database node
# that is also an etcd member; it acts only where PostgreSQL is the primary and the local member leads.
#
# Usage: pgha-etcd-leader-away LOCAL_CLIENT_URL MEMBER_CLIENT_URL...
#   the other members' client URLs, the preferred new leader first (rendered from the plan's RTTs).
# etcdctl's TLS settings come from the unit's EnvironmentFile (/etc/pgha/etcdctl.env). Every failure ends the run
# with 0: the next run is seconds away, and a failed unit would mark the machine degraded while etcd restarts.
set -uo pipefail
self=$1
shift
[ "$(psql -XAtc 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ] || exit 0
# etcdctl's simple output: endpoint, ID, version, DB size, is leader, ...
status=$(ETCDCTL_ENDPOINTS=$self etcdctl endpoint status --command-timeout=3s 2>/dev/null) || exit 0
[ "$(cut -d, -f5 <<<"$status")" = " true" ] || exit 0
for url; do
  # A member that answers is healthy enough to lead; its answer carries its ID.
  id=$(ETCDCTL_ENDPOINTS=$url etcdctl endpoint status --command-timeout=3s 2>/dev/null | cut -d, -f2)
  [ -n "$id" ] || continue
  if ETCDCTL_ENDPOINTS=$self etcdctl move-leader "${id# }" --command-timeout=5s >/dev/null; then
    echo "pgha-etcd-leader-away: this host runs the primary; etcd's raft leader moved to $url"
    exit 0
  fi
done
echo "pgha-etcd-leader-away: this host runs the primary and leads etcd; no other member took the leadership" >&2
