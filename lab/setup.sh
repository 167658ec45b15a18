#!/usr/bin/env bash
# One-time machine setup for the render tests and the lab (run as root):
# host tools from Debian's archive (also the linters npm test runs: shellcheck, pyflakes3; systemd-nspawn and apt-utils
# for the machines lab), then the cached Debian 13 rootfs that holds the real PostgreSQL 17, Patroni, etcd 3.5, HAProxy
# and cloud-init, and the machines' cloud image and package mirror.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "lab/setup.sh: run as root (it installs packages and builds a chroot)" >&2
  exit 1
fi
need=()
for tool in debootstrap:debootstrap ip:iproute2 unshare:util-linux openssl:openssl tar:tar shellcheck:shellcheck pyflakes3:python3-pyflakes systemd-nspawn:systemd-container apt-ftparchive:apt-utils gpg:gpg losetup:mount; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
rootfs=$(bash "$(dirname "$0")/build-rootfs.sh")
echo "$rootfs"

# Debian 13 packages that only the render tests need, downloaded once by the
# rootfs's own apt into a cache next to it, one directory per list, keyed by
# the rootfs and the list (tests/render/harness.ts debsDir computes the same
# key). Not part of the rootfs's package list, so the lab's rootfs is not
# rebuilt for them; the tests unpack them into a throw-away overlay.
cache_dir=${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}
download_debs() {
  local debs scratch
  debs="$cache_dir/debs/$(printf '%s\n' "$(basename "$rootfs")" "$@" | sha256sum | cut -c1-12)"
  [ -f "$debs/.pgha-complete" ] && return 0
  echo "downloading $* for the render tests into $debs" >&2
  scratch=$(mktemp -d)
  mkdir -p "$scratch/upper" "$scratch/work" "$scratch/merged" "$scratch/archives"
  # A private mount namespace: the overlay and its mounts vanish with it.
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  unshare --mount --propagation private sh -c '
    set -e
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$2/merged"
    mount -t proc proc "$2/merged/proc"
    mount --bind "$2/archives" "$2/merged/var/cache/apt/archives"
    shift 2
    chroot "$0" apt-get update -qq
    # --reinstall: the package itself is wanted even where the rootfs already has it (a dependency of another tool).
    DEBIAN_FRONTEND=noninteractive chroot "$0" apt-get install -y -qq --download-only --reinstall --no-install-recommends "$@"
  ' "$scratch/merged" "$rootfs" "$scratch" "$@" >&2
  rm -rf "$debs"
  mkdir -p "$debs"
  mv "$scratch"/archives/*.deb "$debs/"
  rm -rf "$scratch"
  touch "$debs/.pgha-complete"
}
# needrestart and unattended-upgrades: tests/render/os-updates.test.ts.
download_debs needrestart unattended-upgrades
# Debian 13's systemd, for systemd-analyze verify on the rendered units, and the exporters whose packaged units
# the rendered drop-ins change (tests/render/first-boot.test.ts).
download_debs systemd prometheus-node-exporter prometheus-postgres-exporter
# The lab's machines: the cloud image and the signed package
# mirror, both cached by their inputs (lab/images.ts).
cd "$(dirname "$0")/.."
npx tsx lab/cli.ts images
