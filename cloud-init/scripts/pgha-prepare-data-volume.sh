#!/bin/bash
# Formats (first boot only) and mounts the node's PGDATA volume.
# Usage: pgha-prepare-data-volume VOLUME_ID MOUNT_POINT [ATTACH_SECONDS]
# The volume is found by its EBS id, which NVMe exposes under
# /dev/disk/by-id regardless of attachment order. A volume that already
# holds a filesystem (a replaced instance) is mounted as it is, never formatted.
set -euo pipefail
volume_id=$1
mount_point=$2
attach_seconds=${3:-600}
device=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volume_id//-/}

# The attachment is made after the instance starts; wait for it
# (pgha:instances.dataVolumeAttachSeconds).
deadline=$((SECONDS + attach_seconds))
until [ -e "$device" ] || [ "$SECONDS" -ge "$deadline" ]; do
  sleep 2
done
if [ ! -e "$device" ]; then
  echo "pgha-prepare-data-volume: $volume_id never appeared at $device within ${attach_seconds} s (pgha:instances.dataVolumeAttachSeconds)" >&2
  exit 1
fi

if ! blkid -o value -s TYPE "$device" >/dev/null 2>&1; then
  mkfs.ext4 -q -L pgdata -m 0 "$device"
fi
mkdir -p "$mount_point"
# A mount unit, not an fstab line: it names the volume by its EBS id, so a
# replaced instance mounts the same volume whatever its attachment order, and
# systemd orders it before Patroni (RequiresMountsFor= in patroni.service).
# WantedBy=multi-user.target, not local-fs.target: a volume that is missing
# after a reboot fails this unit (and so Patroni) but not the boot, and the
# node stays reachable over SSM. (systemd's fstab generator also skips device
# entries inside a container, where the lab runs this same script.)
unit=$(systemd-escape --path --suffix=mount "$mount_point")
cat > "/etc/systemd/system/$unit" <<UNIT
# Written by pgha-prepare-data-volume at first boot: PGDATA's EBS volume $volume_id.
[Unit]
Description=PGDATA volume $volume_id

[Mount]
What=$device
Where=$mount_point
Type=ext4
Options=defaults,noatime

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now "$unit"
chown postgres:postgres "$mount_point"
chmod 0700 "$mount_point"
