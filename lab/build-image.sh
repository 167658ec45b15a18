#!/usr/bin/env bash
# Builds (once) the lab's "cloud image": the Debian 13 root that each lab
# machine boots with systemd-nspawn, as an EC2 instance boots its AMI. It holds
# what a Debian cloud image holds (systemd, cloud-init, apt, curl, ...) and none
# of the product's packages: the node installs PostgreSQL, Patroni, etcd and
# HAProxy at first boot from the lab's mirror (lab/build-mirror.sh), which the
# image's apt treats as its distribution archive (http://<infra-ip>/debian,
# signed by the lab archive key). It trusts the lab infrastructure CA and
# resolves the SSM endpoint names to the infra address, as the VPC does.
#
# Usage: bash lab/build-image.sh --infra-ip IP --host-names "NAME ..." [--check]
# Prints the image directory (logs go to stderr). Cached under
# ${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}/image-<key>, the key covering this
# script, its arguments and the infra keys (lab/infra-keys.sh); --check only
# reports whether that image is built (exit 1 with the reason if not).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
cache_dir=${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}
suite=trixie
mirror=${PGHA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# openssh-client: cloud-init generates the SSH host keys a cloud image has with its
# ssh-keygen (without it: six failed runs and "degraded done"); no SSH server runs.
packages=(
  systemd systemd-sysv dbus cloud-init ca-certificates gpg iproute2 iputils-ping
  procps util-linux e2fsprogs curl python3 netbase openssl less openssh-client
  debian-archive-keyring
)
# The node installs these at first boot; an image carrying them would hide a
# missing package in the user-data.
forbidden=(postgresql-17 patroni etcd-server etcd-client haproxy python3-boto3)

usage() {
  echo "usage: bash lab/build-image.sh --infra-ip IP --host-names \"NAME ...\" [--check]" >&2
  exit 2
}
infra_ip=
host_names=
check=
while [ $# -gt 0 ]; do
  case "$1" in
    --infra-ip) [ $# -ge 2 ] || usage; infra_ip=$2; shift 2 ;;
    --host-names) [ $# -ge 2 ] || usage; host_names=$2; shift 2 ;;
    --check) check=--check; shift ;;
    *) usage ;;
  esac
done
if [ -z "$infra_ip" ] || [ -z "$host_names" ]; then usage; fi
read -r -a hosts <<< "$host_names"

infra=$(bash "$here/infra-keys.sh" ${check:+--check})
fingerprints=$(bash "$here/infra-keys.sh" --check --fingerprints)
key=$({ cat "$self"; printf '%s\n' "$infra_ip" "${hosts[@]}" "$fingerprints"; } | sha256sum | cut -c1-12)
image="$cache_dir/image-$key"
# Built already (also by a build that held the lock while this one waited)?
built() { if [ -f "$image/.pgha-complete" ]; then echo "$image"; exit 0; fi; }
built
if [ -n "$check" ]; then
  echo "image not built yet: $image (run: bash lab/build-image.sh --infra-ip $infra_ip --host-names \"${hosts[*]}\")" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

# One build of a key at a time; the second waits and then finds it built.
exec 9> "$cache_dir/.image.lock"
flock 9
built

work="$image.partial"
# Anything mounted in or over it (an overlay names it in its lowerdir=)?
mounted_under() { grep -qF -- "$1" /proc/self/mountinfo; }
if mounted_under "$work"; then
  echo "something is still mounted under $work; unmount it first" >&2
  exit 1
fi
rm -rf "$work"
echo "building the $suite lab image in $work (a few minutes)" >&2
debootstrap --variant=minbase "$suite" "$work" "$mirror" >&2
cleanup() { umount "$work/dev/pts" "$work/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$work/proc"
# A private devpts: dpkg and apt want a terminal for their logs.
mkdir -p "$work/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$work/dev/pts"
# No service may start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' > "$work/usr/sbin/policy-rc.d"
chmod 755 "$work/usr/sbin/policy-rc.d"
chroot "$work" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive chroot "$work" apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
for p in "${forbidden[@]}"; do
  # shellcheck disable=SC2016 # dpkg-query's own ${field} format
  if chroot "$work" dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q ' installed$'; then
    echo "the image must not carry $p" >&2
    exit 1
  fi
done

# The distribution archive is the lab's mirror, signed by the lab archive key.
rm -f "$work/etc/apt/sources.list"
find "$work/etc/apt/sources.list.d" -mindepth 1 -delete
install -m 644 "$infra/archive.gpg" "$work/usr/share/keyrings/pgha-lab-archive.gpg"
cat > "$work/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://$infra_ip/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/pgha-lab-archive.gpg
EOF

# cloud-init: only the NoCloud seed, and keep the sources above (its template
# would point apt at deb.debian.org with -updates, -security and deb-src).
cat > "$work/etc/cloud/cloud.cfg.d/90-pgha-lab.cfg" <<'EOF'
# The lab's image: its datasource is a NoCloud seed, and apt's sources are the
# image's own (the lab mirror), not cloud-init's template.
datasource_list: [NoCloud]
apt:
  preserve_sources_list: true
EOF
# Checked with the image's own cloud-init: the merged system config must carry
# both settings, and every key but datasource_list (a system-only key the
# cloud-config schema does not know) must pass its strict schema.
chroot "$work" python3 - <<'EOF'
import yaml
from cloudinit import util
merged = util.read_conf_with_confd("/etc/cloud/cloud.cfg")
assert merged.get("datasource_list") == ["NoCloud"], merged.get("datasource_list")
assert merged.get("apt", {}).get("preserve_sources_list") is True, merged.get("apt")
with open("/etc/cloud/cloud.cfg.d/90-pgha-lab.cfg") as f:
    own = yaml.safe_load(f)
own.pop("datasource_list")
with open("/tmp/90-pgha-lab.user-data", "w") as f:
    f.write("#cloud-config\n" + yaml.safe_dump(own))
EOF
chroot "$work" cloud-init schema -c /tmp/90-pgha-lab.user-data >&2
rm -f "$work/tmp/90-pgha-lab.user-data"

install -m 644 "$infra/ca.crt" "$work/usr/local/share/ca-certificates/pgha-lab-infra.crt"
chroot "$work" update-ca-certificates >&2

# The SSM endpoint names resolve to the lab's infra address (the VPC's DNS in
# production).
cat > "$work/etc/hosts" <<EOF
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
$infra_ip	${hosts[*]}
EOF

# As a cloud image ships: no identity (systemd makes the machine id at first
# boot, cloud-init sets the hostname), no package lists, no build host DNS.
: > "$work/etc/machine-id"
ln -sfn /etc/machine-id "$work/var/lib/dbus/machine-id"
rm -f "$work/etc/hostname"
rm -f "$work/etc/resolv.conf"
: > "$work/etc/resolv.conf"
chroot "$work" apt-get clean
rm -rf "$work"/var/lib/apt/lists/*
# The image behaves like a real machine: services start when packages ask.
rm -f "$work/usr/sbin/policy-rc.d"
{
  # shellcheck disable=SC2016 # dpkg-query's own ${field} format, not shell expansion
  chroot "$work" dpkg-query -W -f '${Package} ${Version}\n'
} > "$work/.pgha-versions"
umount "$work/dev/pts" "$work/proc"
trap - EXIT
touch "$work/.pgha-complete"
rm -rf "$image"
mv "$work" "$image"
# Older images (other arguments, another script) and failed builds are dead
# weight; under the lock no other image build is running, and one that a
# machine's overlay still uses here is kept.
for old in "$cache_dir"/image-*; do
  [ "$old" != "$image" ] || continue
  if mounted_under "$old"; then
    echo "left $old: something is mounted under it" >&2
  else
    rm -rf "$old"
  fi
done
echo "$image"
