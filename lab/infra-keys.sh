#!/usr/bin/env bash
# Creates (once) the keys of the lab's stand-in infrastructure, shared by
# lab/build-image.sh and lab/build-mirror.sh:
#  - the apt archive signing key of the lab's Debian/PGDG mirror (the image
#    trusts it through Signed-By, the mirror's InRelease/Release.gpg carry it):
#    archive-secret.asc (0600), archive.asc, archive.gpg (binary keyring);
#  - the lab infrastructure CA (ca.key 0600, ca.crt) that the image trusts,
#    for the TLS endpoints the lab stands up in place of AWS's.
# They live in ${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}/infra (0700) and are
# reused by every later build, so images and mirrors built apart still match.
#
# Usage: bash lab/infra-keys.sh [--check] [--fingerprints]
#   prints the infra directory; --check only reports (exit 1 if not created
#   yet); --fingerprints prints "archive <gpg fingerprint>" and
#   "ca <sha256 fingerprint>" instead (the build scripts key their caches on it).
set -euo pipefail

cache_dir=${PGHA_ROOTFS_CACHE:-/var/cache/pgha-lab}
infra="$cache_dir/infra"
check=false
fingerprints=false
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --fingerprints) fingerprints=true ;;
    *) echo "usage: bash lab/infra-keys.sh [--check] [--fingerprints]" >&2; exit 2 ;;
  esac
done
files=(archive-secret.asc archive.asc archive.gpg ca.key ca.crt)

complete() {
  local f
  for f in "${files[@]}"; do [ -s "$infra/$f" ] || return 1; done
}

# A throwaway GNUPGHOME; its agent is stopped and the directory removed.
gnupg_scratch() {
  local home
  home=$(mktemp -d)
  chmod 700 "$home"
  echo "$home"
}
gnupg_done() {
  gpgconf --homedir "$1" --kill gpg-agent 2>/dev/null || true
  rm -rf "$1"
}

create() {
  local tmp home
  mkdir -p "$cache_dir"
  tmp=$(mktemp -d "$cache_dir/.infra.XXXXXX")
  chmod 700 "$tmp"
  home=$(gnupg_scratch)
  echo "creating the lab infrastructure keys in $infra" >&2
  gpg --homedir "$home" --batch --quiet --passphrase '' \
    --quick-generate-key "pgha lab archive" ed25519 sign never 2>/dev/null
  gpg --homedir "$home" --batch --armor --export-secret-keys "pgha lab archive" > "$tmp/archive-secret.asc"
  gpg --homedir "$home" --batch --armor --export "pgha lab archive" > "$tmp/archive.asc"
  gpg --homedir "$home" --batch --export "pgha lab archive" > "$tmp/archive.gpg"
  gnupg_done "$home"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -days 3650 -sha256 \
    -subj "/CN=pgha lab infrastructure CA" \
    -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
  chmod 600 "$tmp/archive-secret.asc" "$tmp/ca.key"
  chmod 644 "$tmp/archive.asc" "$tmp/archive.gpg" "$tmp/ca.crt"
  # Atomic: a crash leaves only the .infra.* scratch, never a half-made infra/.
  rm -rf "$infra"
  mv "$tmp" "$infra"
}

if ! complete; then
  if $check; then
    echo "lab infrastructure keys not created yet: $infra (run: bash lab/infra-keys.sh)" >&2
    exit 1
  fi
  mkdir -p "$cache_dir"
  # Two builds starting together must not make two different key sets.
  exec 9> "$cache_dir/.infra.lock"
  flock 9
  complete || create
  exec 9>&-
fi

if $fingerprints; then
  home=$(gnupg_scratch)
  fpr=$(gpg --homedir "$home" --batch --with-colons --import-options show-only \
    --import "$infra/archive.gpg" 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
  gnupg_done "$home"
  [ -n "$fpr" ] || { echo "no key in $infra/archive.gpg" >&2; exit 1; }
  echo "archive $fpr"
  echo "ca $(openssl x509 -in "$infra/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"
else
  echo "$infra"
fi
