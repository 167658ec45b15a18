#!/usr/bin/python3
"""The drills' application: writes through HAProxy and reports every commit.

Inserts (run, seq) with autocommit every INTERVAL seconds, reconnecting on
any error, and prints one JSON line per attempt:
  {"seq": n, "ok": true, "t": <CLOCK_MONOTONIC s>, "wall": <unix s>, "server": "<inet_server_addr()>"}
  {"seq": n, "ok": false, "t": ..., "err": "..."}    outcome unknown, not acknowledged
  {"event": "connected", "t": ..., "server": "..."}
A commit counts as acknowledged only when the INSERT returned. The client
never cancels a statement (a cancelled wait for the synchronous standby
still commits locally and would report success); a stuck statement is cut by
closing the socket instead, so its outcome stays unknown. The password comes
from PGPASSWORD. Stops on SIGTERM or after --max-seconds.
"""
import argparse
import json
import signal
import socket
import sys
import threading
import time

import psycopg2

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--run", required=True)
parser.add_argument("--interval", type=float, default=0.05)
parser.add_argument("--statement-timeout", type=float, default=5.0)
parser.add_argument("--max-seconds", type=float, default=900.0)
parser.add_argument("--sslrootcert", default="")
args = parser.parse_args()

stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Watchdog:
    """Shuts the connection's socket down when one statement runs too long."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.lock = threading.Lock()
        self.deadline = None
        self.fd = None
        thread = threading.Thread(target=self.loop, daemon=True)
        thread.start()

    def arm(self, fd):
        with self.lock:
            self.fd = fd
            self.deadline = time.monotonic() + self.timeout

    def disarm(self):
        with self.lock:
            self.deadline = None
            self.fd = None

    def loop(self):
        while True:
            time.sleep(0.05)
            with self.lock:
                if self.deadline is not None and time.monotonic() > self.deadline and self.fd is not None:
                    try:
                        sock = socket.socket(fileno=socket.dup(self.fd))
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    except OSError:
                        pass
                    self.deadline = None


def connect():
    params = dict(
        host=args.host, port=args.port, user="postgres", dbname="postgres",
        sslmode="verify-ca" if args.sslrootcert else "require",
        connect_timeout=2, keepalives=1, keepalives_idle=2, keepalives_interval=1, keepalives_count=2,
        tcp_user_timeout=3000, application_name="pgha-lab-writer",
    )
    if args.sslrootcert:
        params["sslrootcert"] = args.sslrootcert
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


def main():
    watchdog = Watchdog(args.statement_timeout)
    started = time.monotonic()
    seq = 0
    conn = None
    while not stopping and time.monotonic() - started < args.max_seconds:
        tick = time.monotonic()
        in_insert = False
        try:
            if conn is None or conn.closed:
                conn = connect()
                with conn.cursor() as cur:
                    cur.execute("select inet_server_addr()::text")
                    emit({"event": "connected", "t": time.monotonic(), "server": cur.fetchone()[0]})
            seq += 1
            in_insert = True
            del conn.notices[:]
            watchdog.arm(conn.fileno())
            with conn.cursor() as cur:
                cur.execute(
                    "insert into lab_writes (run, seq) values (%s, %s) returning host(inet_server_addr())",
                    (args.run, seq),
                )
                server = cur.fetchone()[0]
            watchdog.disarm()
            now = time.monotonic()
            record = {"seq": seq, "ok": True, "t": now, "wall": time.time(), "server": server, "ms": round((now - tick) * 1000, 1)}
            unsafe = [n.strip() for n in conn.notices if "synchronous replication" in n]
            if unsafe:
                record["unsafe"] = unsafe
            emit(record)
        except Exception as error:  # any failure: outcome unknown, reconnect
            watchdog.disarm()
            if in_insert:
                emit({"seq": seq, "ok": False, "t": time.monotonic(), "err": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})
            else:
                emit({"event": "connect-failed", "t": time.monotonic(), "err": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
        delay = args.interval - (time.monotonic() - tick)
        if delay > 0:
            time.sleep(delay)
    emit({"event": "stopped", "t": time.monotonic(), "lastSeq": seq})


if __name__ == "__main__":
    main()
