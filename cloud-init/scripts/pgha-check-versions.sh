#!/bin/bash
# Checks, at first boot, that the installed Patroni, PostgreSQL and etcd are
# the versions the stack pins. An apt pin that matches nothing (PGDG no
# longer carries 4.1.*) does not fail the install: apt silently takes the
# best other candidate. A cluster must not come up on a version it was
# never tested with, so this refuses loudly instead.
#
# Usage: pgha-check-versions [--patroni PATTERN] [--postgres MAJOR PATTERN]
#                            [--etcd PATTERN] [--hold UNIT]...
# PATTERNs are apt pin globs (4.1.*, 17.*) matched against the Debian package
# version; etcd's against `etcd --version` (3.5.21).
#
# On a mismatch: one line per wrong version on stderr (cloud-init copies it to
# /var/log/cloud-init-output.log and the instance console), and, for every
# --hold UNIT, the unit refuses to start (a drop-in asserting that the marker
# file does not exist), so the node never joins the cluster with a wrong
# version and the readiness gate names it. Exit 1; exit 2 on bad usage.
set -euo pipefail
marker=${PGHA_VERSIONS_REFUSED:-/etc/pgha/versions-refused}
etcd_binary=${PGHA_ETCD_BINARY:-/usr/local/bin/etcd}
problems=()
holds=()

usage() {
  echo "pgha-check-versions: $1" >&2
  exit 2
}

package_version() {
  dpkg-query --show --showformat='${Version}' "$1" 2>/dev/null || true
}

# "patroni 4.0.7-3 is installed" or "patroni is not installed".
found() {
  if [ -n "$2" ]; then echo "$1 $2 is installed"; else echo "$1 is not installed"; fi
}

while [ $# -gt 0 ]; do
  case $1 in
    --patroni)
      [ $# -ge 2 ] || usage "--patroni needs a version pattern"
      installed=$(package_version patroni)
      # Unquoted right-hand side: a glob, as apt matches `Pin: version`.
      # shellcheck disable=SC2053
      [[ -n $installed && $installed == $2 ]] || problems+=("$(found patroni "$installed"); versions.patroni pins $2")
      shift 2
      ;;
    --postgres)
      [ $# -ge 3 ] || usage "--postgres needs a major version and a version pattern"
      installed=$(package_version "postgresql-$2")
      # shellcheck disable=SC2053
      [[ -n $installed && $installed == $3 ]] || problems+=("$(found "postgresql-$2" "$installed"); versions.postgresPackage pins $3")
      server=$("/usr/lib/postgresql/$2/bin/postgres" --version 2>/dev/null || true)
      [[ $server =~ \(PostgreSQL\)\ $2\. ]] || problems+=("/usr/lib/postgresql/$2/bin/postgres reports '${server:-nothing}'; versions.postgresMajor is $2")
      shift 3
      ;;
    --etcd)
      [ $# -ge 2 ] || usage "--etcd needs a version"
      installed=$("$etcd_binary" --version 2>/dev/null | sed -n 's/^etcd Version: //p' || true)
      # shellcheck disable=SC2053
      [[ -n $installed && $installed == $2 ]] || problems+=("$(found "etcd ($etcd_binary)" "$installed"); versions.etcd is $2")
      shift 2
      ;;
    --hold)
      [ $# -ge 2 ] || usage "--hold needs a unit name"
      holds+=("$2")
      shift 2
      ;;
    *)
      usage "unknown argument $1"
      ;;
  esac
done

[ ${#problems[@]} -eq 0 ] && exit 0

for problem in "${problems[@]}"; do
  echo "pgha-check-versions: $problem" >&2
done
if [ ${#holds[@]} -gt 0 ]; then
  mkdir -p "$(dirname "$marker")"
  printf '%s\n' "${problems[@]}" > "$marker"
  for unit in "${holds[@]}"; do
    mkdir -p "/etc/systemd/system/$unit.d"
    printf '%s\n' \
      "# Written by pgha-check-versions at first boot: the installed versions are not the stack's (see $marker)." \
      "[Unit]" \
      "AssertPathExists=!$marker" > "/etc/systemd/system/$unit.d/50-pgha-versions.conf"
  done
  echo "pgha-check-versions: holding ${holds[*]} until $marker is removed" >&2
fi
exit 1
