#!/usr/bin/python3
"""Creates the stack's backup repository buckets in the lab's S3-compatible endpoint (moto_server).

As BackupRepository does on AWS (components/backup-repository.ts): one bucket
per region, in that region, versioned. Reads a JSON list on stdin of
{"bucket": ..., "region": ...}.

Usage: s3-buckets.py ENDPOINT_URL CA_BUNDLE
Prints one JSON line: {"buckets": [...]}.
"""
import json
import sys

import boto3


def main():
    endpoint, ca_bundle = sys.argv[1], sys.argv[2]
    created = []
    for repository in json.load(sys.stdin):
        region = repository["region"]
        client = boto3.client("s3", region_name=region, endpoint_url=endpoint, verify=ca_bundle,
                              aws_access_key_id="lab-operator", aws_secret_access_key="lab-operator")
        client.create_bucket(Bucket=repository["bucket"], CreateBucketConfiguration={"LocationConstraint": region})
        client.put_bucket_versioning(Bucket=repository["bucket"], VersioningConfiguration={"Status": "Enabled"})
        created.append(repository["bucket"])
    print(json.dumps({"buckets": created}))


if __name__ == "__main__":
    main()
