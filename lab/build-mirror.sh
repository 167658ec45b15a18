#!/usr/bin/env bash
# Builds (once) the lab's package mirror: what the lab serves at
# http://<infra-ip>/ in place of deb.debian.org, apt.postgresql.org and etcd's
# GitHub releases, so that machines booted from lab/build-image.sh install the
# product at first boot with real apt, offline, from signed repositories:
#   debian/  suite trixie       the Debian packages the node needs beyond the image
#   pgdg/    suite trixie-pgdg  the PostgreSQL project's (postgresql-17,
#                               postgresql-common, patroni, psycopg2 sources)
#   etcd/v<version>/etcd-v<version>-linux-amd64.tar.gz (+ SHA256SUMS), laid out
#                               like etcd's release, from Debian's etcd debs
#   pgha-mirror.json            suites, archive key, etcd digest, package versions
# Both repositories are signed with the lab archive key (lab/infra-keys.sh),
# and the build fails unless a network-less copy of the image installs the
# packages from them.
#
# Usage: bash lab/build-mirror.sh --image DIR --pgdg-packages "P ..." --packages "Q ..." [--check]
# Prints the mirror directory (logs go to stderr). Cached under
# ${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}/mirror-<key>, the key covering this
# script, its arguments, the image and the archive key; --check only reports
# whether that mirror is built (exit 1 with the reason if not).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
cache_dir=${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}
suite=trixie
pgdg_suite=trixie-pgdg
debian_mirror=${PGHA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Source packages that apt.postgresql.org provides in production.
pgdg_sources=" postgresql-17 postgresql-common patroni psycopg2 "

usage() {
  echo "usage: bash lab/build-mirror.sh --image DIR --pgdg-packages \"P ...\" --packages \"Q ...\" [--check]" >&2
  exit 2
}
image=
pgdg_list=
list=
check=
while [ $# -gt 0 ]; do
  case "$1" in
    --image) [ $# -ge 2 ] || usage; image=$2; shift 2 ;;
    --pgdg-packages) [ $# -ge 2 ] || usage; pgdg_list=$2; shift 2 ;;
    --packages) [ $# -ge 2 ] || usage; list=$2; shift 2 ;;
    --check) check=--check; shift ;;
    *) usage ;;
  esac
done
if [ -z "$image" ] || [ -z "$pgdg_list" ] || [ -z "$list" ]; then usage; fi
read -r -a pgdg_packages <<< "$pgdg_list"
read -r -a packages <<< "$list"
wanted=("${pgdg_packages[@]}" "${packages[@]}")
if [ ! -f "$image/.pgha-complete" ]; then
  echo "no built image at $image (run: bash lab/build-image.sh ...)" >&2
  exit 1
fi
image=$(cd "$image" && pwd)

infra=$(bash "$here/infra-keys.sh" ${check:+--check})
archive_fpr=$(bash "$here/infra-keys.sh" --check --fingerprints | awk '$1 == "archive" { print $2 }')
key=$({
  cat "$self"
  printf '%s\n' "pgdg:" "${pgdg_packages[@]}" "packages:" "${packages[@]}" "$(basename "$image")" "$archive_fpr"
} | sha256sum | cut -c1-12)
mirror="$cache_dir/mirror-$key"
# Built already (also by a build that held the lock while this one waited)?
built() { if [ -f "$mirror/.pgha-complete" ]; then echo "$mirror"; exit 0; fi; }
built
if [ -n "$check" ]; then
  echo "mirror not built yet: $mirror (run: bash lab/build-mirror.sh --image $image --pgdg-packages \"${pgdg_packages[*]}\" --packages \"${packages[*]}\")" >&2
  exit 1
fi

# One mirror build at a time; the second waits and then finds it built.
exec 9> "$cache_dir/.mirror.lock"
flock 9
built
work="$mirror.partial"
# Anything mounted in or over it (an overlay names it in its lowerdir=)?
mounted_under() { grep -qF -- "$1" /proc/self/mountinfo; }
if mounted_under "$work"; then
  echo "something is still mounted under $work; unmount it first" >&2
  exit 1
fi
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"
scratch=$(mktemp -d)
gnupg=
cleanup() {
  if [ -n "$gnupg" ]; then
    gpgconf --homedir "$gnupg" --kill gpg-agent 2>/dev/null || true
    rm -rf "$gnupg"
  fi
  # The overlays lived in private mount namespaces and are gone with them.
  mounted_under "$scratch" || rm -rf "$scratch"
}
trap cleanup EXIT

# 1. The closure, from Debian's archive, in a throwaway overlay of the image:
# only what the image lacks is fetched, and the named packages themselves
# (apt-get download) where the image already has them, so that the mirror
# holds every package the node names. etcd's debs go aside, for the tarball.
echo "downloading ${wanted[*]} (and etcd-server, etcd-client) from $debian_mirror" >&2
mkdir -p "$scratch/dl/upper" "$scratch/dl/work" "$scratch/dl/merged" "$scratch/archives"
# shellcheck disable=SC2016 # the inner script expands its own arguments
unshare --mount --propagation private bash -c '
  set -euo pipefail
  root=$1 image=$2 dl=$3 archives=$4 mirror=$5
  shift 5
  mount -t overlay overlay -o "lowerdir=$image,upperdir=$dl/upper,workdir=$dl/work" "$root"
  mount -t proc proc "$root/proc"
  mount --bind "$archives" "$root/var/cache/apt/archives"
  mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
  rm -f "$root"/etc/apt/sources.list.d/*
  printf "Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" \
    "$mirror" > "$root/etc/apt/sources.list.d/debian.sources"
  chroot "$root" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --download-only --no-install-recommends "$@"
  mkdir -p "$root/tmp/extra" "$root/tmp/etcd"
  chroot "$root" chown _apt "/tmp/extra" "/tmp/etcd"
  for p in "$@"; do
    if ! compgen -G "$archives/${p}_*.deb" >/dev/null; then
      chroot "$root" sh -c "cd /tmp/extra && apt-get download -q \"\$0\"" "$p"
    fi
  done
  chroot "$root" sh -c "cd /tmp/etcd && apt-get download -q etcd-server etcd-client"
  mv "$root"/tmp/extra/*.deb "$archives/" 2>/dev/null || true
  mkdir -p "$dl/etcd"
  mv "$root"/tmp/etcd/*.deb "$dl/etcd/"
' bash "$scratch/dl/merged" "$image" "$scratch/dl" "$scratch/archives" "$debian_mirror" "${wanted[@]}" >&2

# 2. Two repositories: the PostgreSQL project's packages under pgdg/, the rest
# under debian/, each in a pool/main/<prefix>/<source>/ layout.
debs=("$scratch"/archives/*.deb)
[ -e "${debs[0]}" ] || { echo "nothing was downloaded" >&2; exit 1; }
declare -A versions=()
for deb in "${debs[@]}"; do
  package=$(dpkg-deb -f "$deb" Package)
  source=$(dpkg-deb -f "$deb" Source)
  source=${source%% *}
  source=${source:-$package}
  versions[$package]=$(dpkg-deb -f "$deb" Version)
  case "$pgdg_sources" in *" $source "*) repo=pgdg ;; *) repo=debian ;; esac
  case "$source" in lib?*) prefix=${source:0:4} ;; *) prefix=${source:0:1} ;; esac
  mkdir -p "$work/$repo/pool/main/$prefix/$source"
  cp "$deb" "$work/$repo/pool/main/$prefix/$source/"
done
for p in "${wanted[@]}"; do
  [ -n "${versions[$p]:-}" ] || { echo "$p is in neither repository" >&2; exit 1; }
done

gnupg=$(mktemp -d)
chmod 700 "$gnupg"
gpg --homedir "$gnupg" --batch --quiet --import "$infra/archive-secret.asc" 2>/dev/null
# make_repo DIR DIST SUITE DESCRIPTION: indexes, Release, InRelease, Release.gpg.
make_repo() {
  local dir=$1 dist=$2 release_suite=$3 description=$4 index
  index="dists/$dist/main/binary-amd64"
  mkdir -p "$dir/pool/main" "$dir/$index"
  (cd "$dir" && apt-ftparchive packages pool/main) > "$dir/$index/Packages"
  gzip -9nk "$dir/$index/Packages"
  xz -k "$dir/$index/Packages"
  apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=pgha-lab \
    -o APT::FTPArchive::Release::Label=pgha-lab \
    -o "APT::FTPArchive::Release::Suite=$release_suite" \
    -o "APT::FTPArchive::Release::Codename=$dist" \
    -o APT::FTPArchive::Release::Architectures=amd64 \
    -o APT::FTPArchive::Release::Components=main \
    -o "APT::FTPArchive::Release::Description=$description" \
    release "$dir/dists/$dist" > "$scratch/Release"
  mv "$scratch/Release" "$dir/dists/$dist/Release"
  gpg --homedir "$gnupg" --batch --yes --local-user "$archive_fpr" --digest-algo SHA512 \
    --clearsign -o "$dir/dists/$dist/InRelease" "$dir/dists/$dist/Release"
  gpg --homedir "$gnupg" --batch --yes --local-user "$archive_fpr" --digest-algo SHA512 \
    --armor --detach-sign -o "$dir/dists/$dist/Release.gpg" "$dir/dists/$dist/Release"
  echo "$dir: $(grep -c '^Package: ' "$dir/$index/Packages") packages" >&2
}
# Suite and Codename as the real archives name them.
make_repo "$work/debian" "$suite" stable "pgha lab mirror of Debian $suite"
make_repo "$work/pgdg" "$pgdg_suite" "$pgdg_suite" "pgha lab stand-in for apt.postgresql.org $pgdg_suite"

# 3. Prove it: a copy of the image with no network at all installs the
# packages from the two repositories alone, trusting only the lab key.
echo "installing ${wanted[*]} offline from the mirror" >&2
mkdir -p "$scratch/t/upper" "$scratch/t/work" "$scratch/t/merged"
# shellcheck disable=SC2016 # the inner script expands its own arguments
unshare --mount --net --propagation private bash -c '
  set -euo pipefail
  root=$1 image=$2 t=$3 mirror=$4
  shift 4
  mount -t overlay overlay -o "lowerdir=$image,upperdir=$t/upper,workdir=$t/work" "$root"
  mount -t proc proc "$root/proc"
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
  mkdir -p "$root/srv/pgha-mirror"
  mount --bind -o ro "$mirror" "$root/srv/pgha-mirror"
  printf "#!/bin/sh\nexit 101\n" > "$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  rm -f "$root"/etc/apt/sources.list.d/*
  printf "Types: deb\nURIs: file:/srv/pgha-mirror/%s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/pgha-lab-archive.gpg\n" \
    debian trixie > "$root/etc/apt/sources.list.d/debian.sources"
  printf "Types: deb\nURIs: file:/srv/pgha-mirror/%s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/pgha-lab-archive.gpg\n" \
    pgdg trixie-pgdg > "$root/etc/apt/sources.list.d/pgdg.sources"
  chroot "$root" apt-get update 2>&1 | tee "$t/update.log"
  if grep -E "^(W|E|Err):|GPG error|NO_PUBKEY|not signed|insecure" "$t/update.log"; then
    echo "apt-get update against the mirror was not clean" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends "$@"
  chroot "$root" apt-cache policy postgresql-17 patroni
' bash "$scratch/t/merged" "$image" "$scratch/t" "$work" "${wanted[@]}" >&2

# 4. etcd's release archive, byte for byte the same from the same debs.
etcd_root="$scratch/etcd-x"
mkdir -p "$etcd_root"
for deb in "$scratch"/dl/etcd/*.deb; do dpkg-deb -x "$deb" "$etcd_root"; done
etcd_deb_version=$(dpkg-deb -f "$(compgen -G "$scratch/dl/etcd/etcd-server_*.deb")" Version)
etcd_version=${etcd_deb_version#*:}
etcd_version=${etcd_version%-*}
etcd_version=${etcd_version%%+*}
name="etcd-v$etcd_version-linux-amd64"
mkdir -p "$scratch/etcd-tar/$name" "$work/etcd/v$etcd_version"
for bin in etcd etcdctl etcdutl; do
  install -m 755 "$etcd_root/usr/bin/$bin" "$scratch/etcd-tar/$name/$bin"
done
chmod 755 "$scratch/etcd-tar/$name"
tar -C "$scratch/etcd-tar" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --format=gnu -cf - "$name" | gzip -9n > "$work/etcd/v$etcd_version/$name.tar.gz"
(cd "$work/etcd/v$etcd_version" && sha256sum "$name.tar.gz" > SHA256SUMS)
etcd_sha=$(cut -d' ' -f1 "$work/etcd/v$etcd_version/SHA256SUMS")

# 5. What the caller needs to know, as JSON.
for p in "${wanted[@]}"; do printf '%s\t%s\n' "$p" "${versions[$p]}"; done |
  python3 -c '
import json, sys
archive_key, etcd_version, etcd_sha = sys.argv[1:4]
versions = dict(line.rstrip("\n").split("\t") for line in sys.stdin)
print(json.dumps({
    "debianSuite": "trixie",
    "pgdgSuite": "trixie-pgdg",
    "archiveKey": archive_key,
    "etcd": {"version": etcd_version, "sha256": etcd_sha, "path": "etcd"},
    "versions": dict(sorted(versions.items())),
}, indent=2))
' "$infra/archive.asc" "$etcd_version" "$etcd_sha" > "$work/pgha-mirror.json"

touch "$work/.pgha-complete"
rm -rf "$mirror"
mv "$work" "$mirror"
# Older mirrors and failed builds are dead weight; under the lock no other
# mirror build is running.
for old in "$cache_dir"/mirror-*; do
  [ "$old" != "$mirror" ] || continue
  if mounted_under "$old"; then
    echo "left $old: something is mounted under it" >&2
  else
    rm -rf "$old"
  fi
done
echo "$mirror"
