#!/bin/bash
# Formats (first boot only) and mounts the node's PGDATA volume.
# Usage: pgha-prepare-data-volume VOLUME_ID MOUNT_POINT
# The volume is found by its EBS id, which NVMe exposes under
# /dev/disk/by-id regardless of attachment order. A volume that already
# holds a filesystem (a replaced instance) is mounted as it is, never formatted.
set -euo pipefail
volume_id=$1
mount_point=$2
device=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volume_id//-/}

# The attachment is made after the instance starts; wait for it.
for _ in $(seq 1 120); do
  [ -e "$device" ] && break
  sleep 5
done
if [ ! -e "$device" ]; then
  echo "pgha-prepare-data-volume: $volume_id never appeared at $device" >&2
  exit 1
fi

if ! blkid -o value -s TYPE "$device" >/dev/null 2>&1; then
  mkfs.ext4 -q -L pgdata -m 0 "$device"
fi
uuid=$(blkid -o value -s UUID "$device")
mkdir -p "$mount_point"
if ! grep -q "UUID=$uuid " /etc/fstab; then
  echo "UUID=$uuid $mount_point ext4 defaults,noatime,nofail 0 2" >> /etc/fstab
fi
mountpoint -q "$mount_point" || mount "$mount_point"
chown postgres:postgres "$mount_point"
chmod 0700 "$mount_point"
