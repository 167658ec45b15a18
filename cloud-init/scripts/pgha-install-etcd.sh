#!/bin/bash
# Installs etcd from a release archive (etcd's own on GitHub unless
# packages.etcdReleaseUrl says otherwise), verified against the SHA-256
# pinned in the stack configuration (versions.etcdSha256).
# Usage: pgha-install-etcd VERSION SHA256 ARCH URL
#   fetches URL/vVERSION/etcd-vVERSION-linux-ARCH.tar.gz (URL: packages.etcdReleaseUrl)
set -euo pipefail
if [ $# -ne 4 ]; then
  echo "usage: pgha-install-etcd VERSION SHA256 ARCH URL" >&2
  exit 2
fi
version=$1
sha256=$2
arch=$3
release_url=$4

if [ -x /usr/local/bin/etcd ] && /usr/local/bin/etcd --version | grep -qx "etcd Version: $version"; then
  exit 0
fi
name=etcd-v$version-linux-$arch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Retries every error (connection refused or timed out too, as before the NAT
# gateway carries traffic) for up to 15 minutes.
curl --fail --silent --show-error --location --connect-timeout 10 --retry 60 --retry-delay 5 --retry-max-time 900 --retry-all-errors --output "$work/$name.tar.gz" "$release_url/v$version/$name.tar.gz"
echo "$sha256  $work/$name.tar.gz" | sha256sum --check --strict --quiet
tar -xzf "$work/$name.tar.gz" -C "$work"
install -m 0755 "$work/$name/etcd" "$work/$name/etcdctl" "$work/$name/etcdutl" /usr/local/bin/
