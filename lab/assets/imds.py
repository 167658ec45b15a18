#!/usr/bin/python3
"""The lab's instance metadata service: the IMDSv2 subset a node's SDKs use.

Listens on 169.254.169.254:80 in the lab's router namespace, so only lab
nodes reach it, and answers each node by its source address, as EC2 answers
each instance: its instance id, region and the temporary credentials of its
instance role. boto3's default credential chain (pgha-fetch-secrets) and
aws-sdk-go's (Alertmanager's SNS notifier) find
them exactly as on EC2: PUT /latest/api/token, then GET
/latest/meta-data/iam/security-credentials/<role> with the token.

IMDSv1 (a GET without a token) is refused with 401, as on an instance with
HttpTokens=required (components/node-instance.ts sets it).

Usage: imds.py CONFIG.json, where CONFIG maps node addresses to
{"instanceId", "region", "role", "accessKeyId", "secretAccessKey"}.
Each request is logged to stdout as one line.
"""
import datetime
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESS = "169.254.169.254"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TTL = 21600

with open(sys.argv[1], encoding="utf-8") as handle:
    NODES = json.load(handle)
TOKENS = {}  # token -> (source address, expiry)


def credentials(node):
    expiration = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=6)
    return json.dumps({
        "Code": "Success",
        "LastUpdated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Type": "AWS-HMAC",
        "AccessKeyId": node["accessKeyId"],
        "SecretAccessKey": node["secretAccessKey"],
        "Token": "lab-session-" + node["instanceId"],
        "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
    })


def metadata(node, path):
    role_prefix = "/latest/meta-data/iam/security-credentials/"
    answers = {
        "/latest/meta-data/instance-id": node["instanceId"],
        "/latest/meta-data/placement/region": node["region"],
        "/latest/meta-data/local-ipv4": node["address"],
        role_prefix: node["role"],
        # EC2 lists the role with or without the trailing slash; pgBackRest asks without it.
        role_prefix.rstrip("/"): node["role"],
        role_prefix + node["role"]: credentials(node),
        "/latest/dynamic/instance-identity/document": json.dumps(
            {"instanceId": node["instanceId"], "region": node["region"], "privateIp": node["address"]}),
    }
    return answers.get(path)


class Handler(BaseHTTPRequestHandler):
    server_version = "EC2ws"
    sys_version = ""

    def reply(self, status, body="", headers=()):
        data = body.encode("utf-8")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        sys.stdout.write("%s %s\n" % (self.client_address[0], format % args))
        sys.stdout.flush()

    def node(self):
        return NODES.get(self.client_address[0])

    def do_PUT(self):
        if self.path != "/latest/api/token":
            return self.reply(404)
        if self.node() is None:
            return self.reply(403, "not a lab instance")
        try:
            ttl = int(self.headers.get(TTL_HEADER, ""))
        except ValueError:
            return self.reply(400, "missing or invalid " + TTL_HEADER)
        if not 1 <= ttl <= MAX_TTL:
            return self.reply(400, "invalid " + TTL_HEADER)
        token = secrets.token_urlsafe(32)
        TOKENS[token] = (self.client_address[0], time.monotonic() + ttl)
        # EC2 echoes the token's lifetime; aws-sdk-go (Alertmanager's SNS notifier) refuses a token without it.
        return self.reply(200, token, headers=[(TTL_HEADER, str(ttl))])

    def do_GET(self):
        node = self.node()
        if node is None:
            return self.reply(403, "not a lab instance")
        source, expiry = TOKENS.get(self.headers.get(TOKEN_HEADER, ""), (None, 0))
        if source != self.client_address[0] or time.monotonic() > expiry:
            return self.reply(401)
        answer = metadata(node, self.path)
        if answer is None:
            return self.reply(404)
        return self.reply(200, answer)


def main():
    for address, node in NODES.items():
        node["address"] = address
    ThreadingHTTPServer((ADDRESS, 80), Handler).serve_forever()


if __name__ == "__main__":
    main()
