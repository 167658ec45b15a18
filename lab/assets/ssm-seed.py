#!/usr/bin/python3
"""Writes the lab's SSM parameters into its SSM-compatible endpoint (moto_server).

Reads a JSON list on stdin, one record per parameter exactly as NodeSecrets
creates it on AWS (components/node-secrets.ts): name, type (SecureString or
String), value, tier, description and the node's AWS region. Values come on
stdin so that no secret appears in a command line.

Usage: ssm-seed.py ENDPOINT_URL CA_BUNDLE
Prints one JSON line: {"written": N, "regions": {...}}.
"""
import json
import sys

import boto3


def main():
    endpoint, ca_bundle = sys.argv[1], sys.argv[2]
    records = json.load(sys.stdin)
    clients = {}
    counts = {}
    for record in records:
        region = record["region"]
        if region not in clients:
            # moto accepts any key pair; the node side uses its instance role's (lab/assets/imds.py).
            clients[region] = boto3.client("ssm", region_name=region, endpoint_url=endpoint, verify=ca_bundle,
                                           aws_access_key_id="lab-operator", aws_secret_access_key="lab-operator")
        clients[region].put_parameter(Name=record["name"], Value=record["value"], Type=record["type"], Tier=record["tier"],
                                      Description=record["description"], Overwrite=True)
        counts[region] = counts.get(region, 0) + 1
    print(json.dumps({"written": len(records), "regions": counts}, sort_keys=True))


if __name__ == "__main__":
    main()
