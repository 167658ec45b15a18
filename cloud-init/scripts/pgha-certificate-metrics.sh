#!/bin/sh
# pgha-certificate-metrics DIR OUTPUT: the notAfter of every certificate in DIR
# (*.crt, and the first certificate of each *.pem bundle) as
# pgha_certificate_expiry_timestamp_seconds{path=...} for node_exporter's
# textfile collector. Written to a temporary file and renamed, so the
# collector never reads half a file. Run by pgha-certificate-metrics.service
# (hourly timer, and at boot), so a renewal shows within the hour.
set -eu
dir=$1
output=$2
tmp="$output.$$"
trap 'rm -f "$tmp"' EXIT
{
  echo "# HELP pgha_certificate_expiry_timestamp_seconds Unix time at which a certificate on this node expires (notAfter)."
  echo "# TYPE pgha_certificate_expiry_timestamp_seconds gauge"
  for cert in "$dir"/*.crt "$dir"/*.pem; do
    [ -f "$cert" ] || continue
    end=$(openssl x509 -noout -enddate -in "$cert" | sed 's/^notAfter=//')
    echo "pgha_certificate_expiry_timestamp_seconds{path=\"$cert\"} $(date -u -d "$end" +%s)"
  done
} > "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$output"
trap - EXIT
