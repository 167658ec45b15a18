#!/usr/bin/python3
"""Does a read on the sync port see the commit just acknowledged on the write port?

Commits one row at a time through --write-port and, right after each commit
returns, looks for it on a second connection through --read-port. Does it
COUNT times with synchronous_commit=on (the cluster's setting: the sync
standby has flushed the commit, not necessarily applied it) and COUNT times
with synchronous_commit=remote_apply (the commit returns only once the sync
standby has applied it). Prints one JSON line:
  {"on": {"commits": n, "missed": m, "server": "..."}, "remote_apply": {...}}
The password comes from PGPASSWORD.
"""
import argparse
import json

import psycopg2

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True)
parser.add_argument("--write-port", type=int, required=True)
parser.add_argument("--read-port", type=int, required=True)
parser.add_argument("--run", required=True)
parser.add_argument("--count", type=int, default=100)
parser.add_argument("--sslrootcert", required=True)
args = parser.parse_args()


def connect(port):
    connection = psycopg2.connect(
        host=args.host,
        port=port,
        user="postgres",
        dbname="postgres",
        sslmode="verify-ca",
        sslrootcert=args.sslrootcert,
        connect_timeout=5,
        application_name="pgha-lab-read-your-writes",
    )
    connection.autocommit = True
    return connection


writer = connect(args.write_port).cursor()
reader = connect(args.read_port).cursor()
writer.execute("create table if not exists lab_read_your_writes (run text not null, mode text not null, seq int not null, primary key (run, mode, seq))")
reader.execute("select host(inet_server_addr())")
read_server = reader.fetchone()[0]
result = {}
for mode in ("on", "remote_apply"):
    writer.execute("select set_config('synchronous_commit', %s, false)", (mode,))
    missed = 0
    for seq in range(args.count):
        writer.execute("insert into lab_read_your_writes (run, mode, seq) values (%s, %s, %s)", (args.run, mode, seq))
        reader.execute("select count(*) from lab_read_your_writes where run = %s and mode = %s and seq = %s", (args.run, mode, seq))
        if reader.fetchone()[0] == 0:
            missed += 1
    result[mode] = {"commits": args.count, "missed": missed, "server": read_server}
print(json.dumps(result))
