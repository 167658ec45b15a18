#!/usr/bin/python3
"""Write this node's TLS material and passwords from SSM Parameter Store.

Reads /etc/pgha/secrets.json (rendered into user-data; it names parameters,
never values), fetches every parameter with decryption, and writes each file
atomically with its owner and mode. User-data stays free of secrets because
any process on an instance can read user-data through the metadata service.

--from-dir DIR reads the parameter values from DIR/<parameter name> instead
of SSM: the local lab uses it, and so can an operator restoring from a
break-glass copy.

Only files whose content, owner or mode differ are written, so a renewed
certificate can be rolled out by running this again (ops/rollout.ts).
--check fetches the same way but writes nothing. Both print one JSON line
naming the files that differ and how (never a value):

  {"mode": "check", "files": 9, "changed": [{"path": "/etc/pgha/tls/postgres-server.crt", "differs": ["content"]}]}
"""
import argparse
import grp
import json
import os
import pwd
import stat
import sys
import tempfile
import time

SSM_BATCH = 10  # GetParameters accepts at most ten names per call.


def parameter_names(manifest):
    names = set()
    for entry in manifest["files"]:
        content = entry["content"]
        if content["kind"] == "parameters":
            names.update(content["parameters"])
        else:
            names.update(v["parameter"] for v in content["variables"])
    return sorted(names)


def fetch_from_dir(directory, names):
    values = {}
    for name in names:
        path = os.path.join(directory, name.lstrip("/"))
        with open(path, encoding="utf-8") as handle:
            values[name] = handle.read()
    return values


def fetch_from_ssm(region, names, deadline_seconds):
    import boto3  # python3-boto3, installed by cloud-init
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("ssm", region_name=region, config=Config(retries={"max_attempts": 10, "mode": "standard"}))
    deadline = time.monotonic() + deadline_seconds
    delay = 2
    while True:
        try:
            values = {}
            missing = []
            for start in range(0, len(names), SSM_BATCH):
                reply = client.get_parameters(Names=names[start:start + SSM_BATCH], WithDecryption=True)
                missing.extend(reply.get("InvalidParameters", []))
                for parameter in reply["Parameters"]:
                    values[parameter["Name"]] = parameter["Value"]
            if not missing:
                return values
            problem = "missing parameters: " + ", ".join(missing)
        except (BotoCoreError, ClientError) as error:
            # A new instance role can take a few seconds to be usable.
            problem = str(error)
        if time.monotonic() > deadline:
            sys.exit("pgha-fetch-secrets: giving up: " + problem)
        print("pgha-fetch-secrets: retrying in %ds: %s" % (delay, problem), file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 30)


def render(content, values):
    if content["kind"] == "parameters":
        return "".join(values[name].rstrip("\n") + "\n" for name in content["parameters"])
    # "environment" (a systemd EnvironmentFile) and "ini" (one section of pgBackRest's conf.d) are both name=value lines.
    lines = ["[%s]\n" % content["section"]] if content["kind"] == "ini" else []
    for variable in content["variables"]:
        value = values[variable["parameter"]]
        if "\n" in value:
            sys.exit("pgha-fetch-secrets: %s would span lines in an %s file" % (variable["parameter"], content["kind"]))
        lines.append("%s=%s\n" % (variable["name"], value))
    return "".join(lines)


def differences(path, text, owner, mode):
    """How the file on disk differs from what the manifest wants: content, owner, mode (all three when missing)."""
    try:
        with open(path, "rb") as handle:
            current = handle.read()
        info = os.stat(path)
    except FileNotFoundError:
        return ["content", "owner", "mode"]
    found = []
    if current != text.encode("utf-8"):
        found.append("content")
    if (info.st_uid, info.st_gid) != (pwd.getpwnam(owner).pw_uid, grp.getgrnam(owner).gr_gid):
        found.append("owner")
    if stat.S_IMODE(info.st_mode) != int(mode, 8):
        found.append("mode")
    return found


def write_file(path, text, owner, mode):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    uid = pwd.getpwnam(owner).pw_uid
    gid = grp.getgrnam(owner).gr_gid
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".pgha-")
    try:
        os.fchmod(fd, int(mode, 8))
        os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="/etc/pgha/secrets.json")
    parser.add_argument("--from-dir", help="read parameter values from files under this directory instead of SSM")
    parser.add_argument("--deadline", type=int, default=600, help="seconds to keep retrying SSM")
    parser.add_argument("--check", action="store_true", help="fetch, write nothing, print which files would change")
    args = parser.parse_args()

    with open(args.manifest, encoding="utf-8") as handle:
        manifest = json.load(handle)
    names = parameter_names(manifest)
    if args.from_dir:
        values = fetch_from_dir(args.from_dir, names)
    else:
        values = fetch_from_ssm(manifest["region"], names, args.deadline)
    changed = []
    for entry in manifest["files"]:
        text = render(entry["content"], values)
        differs = differences(entry["path"], text, entry["owner"], entry["mode"])
        if not differs:
            continue
        changed.append({"path": entry["path"], "differs": differs})
        if not args.check:
            write_file(entry["path"], text, entry["owner"], entry["mode"])
    report = {"mode": "check" if args.check else "write", "files": len(manifest["files"]), "parameters": len(names), "changed": changed}
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
