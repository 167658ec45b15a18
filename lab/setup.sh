#!/usr/bin/env bash
# One-time machine setup for the render tests and the lab (run as root):
# host tools from Debian's archive, then the cached Debian 13 rootfs that
# holds the real PostgreSQL 17, Patroni, etcd 3.5, HAProxy and cloud-init.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "lab/setup.sh: run as root (it installs packages and builds a chroot)" >&2
  exit 1
fi
need=()
for tool in debootstrap:debootstrap ip:iproute2 unshare:util-linux openssl:openssl tar:tar shellcheck:shellcheck; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
exec bash "$(dirname "$0")/build-rootfs.sh"
