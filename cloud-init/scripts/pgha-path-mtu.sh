#!/bin/sh
# pgha-path-mtu MTU CIDR...
#
# Routes each of the other regions' VPC CIDRs at MTU bytes, through the
# gateway and interface the node uses for them now. EC2 interfaces carry
# jumbo frames (9001) but inter-Region VPC peering carries at most 8500
# (EC2 User Guide, "Network maximum transmission unit (MTU) for your EC2
# instance"), and a packet over it with Don't Fragment set is dropped. With
# ICMP "fragmentation needed" lost or filtered anywhere on the way, TCP never
# learns the smaller size: handshakes and health checks pass, then
# pg_basebackup, WAL bursts and large result sets stall. A route MTU makes
# the kernel advertise and send segments that fit (MSS = MTU - 40) from the
# first packet on, in both directions of every TCP connection to those VPCs.
#
# Idempotent (`ip route replace`); run by pgha-path-mtu.service at boot and
# again whenever systemd-networkd restarts (it removes routes it did not make).
set -eu

if [ "$#" -lt 2 ]; then
  echo "usage: pgha-path-mtu MTU CIDR..." >&2
  exit 2
fi
mtu=$1
shift
case "$mtu" in
  *[!0-9]* | "") echo "pgha-path-mtu: MTU must be a number, got '$mtu'" >&2; exit 2 ;;
esac

for cidr in "$@"; do
  network=${cidr%/*}
  # What the kernel would use for that network now: the VPC router on the primary interface.
  if ! route=$(ip -4 -o route get "$network" 2>&1); then
    echo "pgha-path-mtu: no route to $cidr: $route" >&2
    exit 1
  fi
  dev=$(printf '%s\n' "$route" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  via=$(printf '%s\n' "$route" | sed -n 's/.* via \([^ ]*\).*/\1/p')
  if [ -z "$dev" ]; then
    echo "pgha-path-mtu: cannot tell the interface for $cidr from: $route" >&2
    exit 1
  fi
  if [ -n "$via" ]; then
    ip -4 route replace "$cidr" via "$via" dev "$dev" mtu "$mtu"
  else
    ip -4 route replace "$cidr" dev "$dev" mtu "$mtu"
  fi
  echo "pgha-path-mtu: $cidr via ${via:-on-link} dev $dev mtu $mtu"
done
