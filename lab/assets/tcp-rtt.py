#!/usr/bin/python3
"""TCP round trips between lab hosts (the WAN proof).

  tcp-rtt.py serve ADDRESS PORT SECONDS
      echoes every connection (TCP_NODELAY) until SECONDS have passed;
      prints "listening" once bound.
  tcp-rtt.py probe ADDRESS PORT COUNT [SIZE]
      connects (the connect time is one SYN/SYN-ACK round trip), then sends
      SIZE bytes (default 64) and waits for the echo, COUNT times, 20 ms
      apart; prints one JSON line {"connectMs": x, "rttMs": [...]}.
  tcp-rtt.py bulk ADDRESS PORT MBYTES [MSS]
      streams MBYTES through the echo server and reads them back; prints
      {"bytes": n, "seconds": s} (load for the delay line's throughput check).
      MSS, when given, caps the segment size of both directions.
"""
import json
import socket
import sys
import threading
import time


def serve(address, port, seconds):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(16)
    listener.settimeout(0.2)
    print("listening", flush=True)
    deadline = time.monotonic() + seconds

    def echo(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            continue
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def recv_exactly(sock, size):
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            raise ConnectionError("connection closed")
        got += chunk
    return got


def probe(address, port, count, size):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(5)
    t0 = time.monotonic()
    sock.connect((address, port))
    connect_ms = (time.monotonic() - t0) * 1000
    payload = b"x" * size
    # One unmeasured exchange first: the server thread may not be running yet.
    sock.sendall(payload)
    recv_exactly(sock, size)
    rtts = []
    for _ in range(count):
        time.sleep(0.02)
        t0 = time.monotonic()
        sock.sendall(payload)
        recv_exactly(sock, size)
        rtts.append(round((time.monotonic() - t0) * 1000, 3))
    sock.close()
    print(json.dumps({"connectMs": round(connect_ms, 3), "rttMs": rtts}), flush=True)


def bulk(address, port, mbytes, mss=0):
    total = int(mbytes * 1024 * 1024)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if mss:
        # Advertised in the SYN, so it bounds both directions' segments.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sock.settimeout(30)
    sock.connect((address, port))
    received = [0]

    def reader():
        while received[0] < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received[0] += len(chunk)

    t0 = time.monotonic()
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    block = b"y" * 65536
    sent = 0
    while sent < total:
        n = min(len(block), total - sent)
        sock.sendall(block[:n])
        sent += n
    thread.join(120)
    seconds = time.monotonic() - t0
    sock.close()
    print(json.dumps({"bytes": received[0], "seconds": round(seconds, 3)}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif mode == "probe":
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 64)
    elif mode == "bulk":
        bulk(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    else:
        sys.exit(f"unknown mode {mode}")
