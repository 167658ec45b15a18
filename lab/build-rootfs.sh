#!/usr/bin/env bash
# Builds (once) the Debian 13 root filesystem that the render tests and the lab
# run the real programs from: PostgreSQL 17, Patroni, etcd 3.5, HAProxy 3.0,
# cloud-init 25.1 and openssl, and the lab's SSM-compatible endpoint (moto_server;
# flask-cors is only its recommendation, but moto_server does not start without it);
# promtool and amtool (the alert rules' tests, the monitoring configs' checks) and
# a headless Chromium with a font (the drill report's screenshot test). The result is cached under $PGHA_ROOTFS_CACHE
# keyed by the package list, so a rerun with the same list is a no-op.
set -euo pipefail

cache_dir=${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}
suite=trixie
mirror=${PGHA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-etcd3 must not be listed: it breaks the resolver (LAB-NOTES.md), and
# Patroni's etcd3 DCS needs python3-etcd (it imports `etcd`), not python3-etcd3.
packages=(
  postgresql-17 postgresql-client-17 patroni python3-psycopg2 python3-etcd
  etcd-server etcd-client haproxy cloud-init python3-moto python3-flask-cors python3-boto3
  openssl ca-certificates iproute2 iputils-ping procps util-linux curl
  prometheus prometheus-alertmanager chromium fonts-dejavu-core
)

key=$(printf '%s\n' "$suite" "${packages[@]}" | sha256sum | cut -c1-12)
rootfs="$cache_dir/rootfs-$key"
if [ -f "$rootfs/.pgha-complete" ]; then
  echo "$rootfs"
  exit 0
fi
# --check: only report whether the cached rootfs exists (the lab uses it to
# fail fast with a clear message instead of starting a build).
if [ "${1:-}" = "--check" ]; then
  echo "rootfs not built yet: $rootfs (run: bash lab/build-rootfs.sh)" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

work="$rootfs.partial"
rm -rf "$work"
mkdir -p "$cache_dir"
echo "building $suite rootfs in $work (a few minutes)" >&2
debootstrap --variant=minbase "$suite" "$work" "$mirror" >&2
cleanup() { umount "$work/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$work/proc"
# Keep the packages from starting services or creating the default cluster
# inside the chroot: Patroni bootstraps PGDATA itself.
printf '#!/bin/sh\nexit 101\n' > "$work/usr/sbin/policy-rc.d"
chmod 755 "$work/usr/sbin/policy-rc.d"
mkdir -p "$work/etc/postgresql-common/createcluster.d"
echo "create_main_cluster = false" > "$work/etc/postgresql-common/createcluster.d/pgha.conf"
chroot "$work" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive chroot "$work" apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
chroot "$work" apt-get clean
umount "$work/proc"
trap - EXIT
{
  # shellcheck disable=SC2016 # dpkg-query's own ${field} format, not shell expansion
  chroot "$work" dpkg-query -W -f '${Package} ${Version}\n' "${packages[@]}"
} > "$work/.pgha-versions"
touch "$work/.pgha-complete"
rm -rf "$rootfs"
mv "$work" "$rootfs"
# Older builds (another package list) are dead weight of about 1 GB each.
for old in "$cache_dir"/rootfs-*; do
  [ "$old" = "$rootfs" ] || [ ! -d "$old" ] || rm -rf "$old"
done
echo "$rootfs"
