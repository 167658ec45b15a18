#!/bin/sh
# Waits, on a node's first boot, until every apt source answers: cloud-init
# runs it from bootcmd (`cloud-init-per instance`), before it configures the
# package sources and installs the packages.
# Usage: pgha-wait-package-sources DEADLINE_SECONDS
#
# Why not apt's own retries: within one apt-get run, apt remembers an address
# that failed to connect and never tries it again, so Acquire::Retries cannot
# outlast a NAT gateway that is not carrying traffic yet; and apt-get update
# only warns and exits 0 when a source is unreachable, so cloud-init's
# package step would then find no packages. Each try here is a new apt-get,
# with --error-on=any so that an unreachable source is a failure.
set -u
deadline_seconds=$1
deadline=$(($(date +%s) + deadline_seconds))
try=1
until apt-get -q -o Acquire::Retries=0 update --error-on=any; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "pgha-wait-package-sources: the package sources did not answer within ${deadline_seconds} s" >&2
    exit 1
  fi
  echo "pgha-wait-package-sources: the package sources do not answer yet (try $try); again in 10 s" >&2
  try=$((try + 1))
  sleep 10
done
echo "pgha-wait-package-sources: the package sources answer (try $try)"
