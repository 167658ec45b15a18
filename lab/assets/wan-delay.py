#!/usr/bin/python3
"""The lab's WAN: a userspace delay line on TUN devices in the router namespace.

The router's policy routing sends every packet that arrives from a region's
bridge and is addressed to ANOTHER region into the TUN device of that
(source region, destination region) path (IFF_TUN | IFF_NO_PI: raw IPv4
packets). This process reads each packet, maps its IPv4 source and
destination addresses to regions (the plan's subnets), and writes it back to
the device it came from after the one-way delay configured for that pair,
optionally with jitter and loss. Written back, the packet comes in on the TUN
device and follows the main table to the destination bridge, so it never
loops.

One device per path, read in turn at most READ_BATCH packets at a time: the
kernel queues in front of this single process are per path, as a real WAN's
are, so a bulk transfer on one path does not delay the packets of another.
Due packets are released after every round of reads, so a busy path cannot
hold back releases either.

  wan-delay.py CONFIG.json

CONFIG.json:
  {"tuns": ["wan0", ...], "seed": 1, "status": "/run/pgha-lab/wan-status.json",
   "subnets": [["10.1.0.0/24", "seoul"], ...],
   "links": {"seoul>tokyo": {"delayMs": 15.5, "jitterMs": 0, "loss": 0}, ...}}

Packets of a pair with no link entry (same region, non-IPv4, unknown
addresses) are written back at once. Jitter is uniform in [-jitter, +jitter]
but never reorders a pair's packets (a packet is released no earlier than the
one before it on the same pair, as on a real path); loss drops a packet with
that probability. Each pair has its own random generator, seeded from the
seed and the pair's name: a given packet sequence on a pair sees the same
losses and jitter on every run, whatever crosses the other pairs meanwhile
(one shared generator let a stray packet on one path, or a reply overtaking
the next request, shift every later draw on all the others).

SIGHUP re-reads the links (delay/jitter/loss) and the seed from CONFIG.json
without losing queued packets, and restarts the random generator from the
seed (so a run from that point on is reproducible); SIGUSR1 writes counters to the status file; SIGTERM/SIGINT
stop. The status file is also written once a second.
"""
import fcntl
import gc
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
# Packets read from one device before the next device gets its turn: small
# enough that a full queue on one path costs the others well under 1 ms
# (about 10 µs a packet here), large enough to amortise the round.
READ_BATCH = 32
MAX_QUEUE = 100_000

config_path = sys.argv[1]


def load(path):
    with open(path) as f:
        return json.load(f)


def ipv4(text):
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def parse_subnets(entries):
    out = []
    for cidr, region in entries:
        net, bits = cidr.split("/")
        bits = int(bits)
        mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF if bits else 0
        out.append((ipv4(net) & mask, mask, region))
    return out


def parse_links(entries):
    links = {}
    for key, spec in entries.items():
        src, dst = key.split(">")
        rate = max(0.0, float(spec.get("rateMbit", 0)))
        links[(src, dst)] = (
            max(0.0, float(spec.get("delayMs", 0))) / 1000.0,
            max(0.0, float(spec.get("jitterMs", 0))) / 1000.0,
            min(1.0, max(0.0, float(spec.get("loss", 0)))),
            # seconds per byte on the wire (0: no capacity limit)
            8.0 / (rate * 1e6) if rate else 0.0,
            max(0.0, float(spec.get("queueMs", 0))) / 1000.0,
            max(0, int(spec.get("pathMtu", 0))),
        )
    return links


cfg = load(config_path)
subnets = parse_subnets(cfg["subnets"])
links = parse_links(cfg.get("links", {}))
seed = int(cfg.get("seed", 1))
rngs = {}


def rng_of(pair):
    rng = rngs.get(pair)
    if rng is None:
        # A str seed is hashed with SHA-512 by random.seed (version 2): the
        # same on every run, whatever PYTHONHASHSEED is.
        rng = rngs[pair] = random.Random(f"{seed}:{pair[0]}>{pair[1]}")
    return rng

status_path = cfg.get("status")

region_cache = {}


def region_of(addr_bytes):
    region = region_cache.get(addr_bytes)
    if region is None:
        value = int.from_bytes(addr_bytes, "big")
        region = ""
        for net, mask, name in subnets:
            if value & mask == net:
                region = name
                break
        if len(region_cache) < 65536:
            region_cache[addr_bytes] = region
    return region


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


tun_names = cfg["tuns"]
tun_fds = [open_tun(name) for name in tun_names]

# Signals only set flags; a self-pipe wakes the select loop.
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
flags = {"hup": False, "usr1": False, "stop": False}


def on_signal(signum, frame):
    if signum == signal.SIGHUP:
        flags["hup"] = True
    elif signum == signal.SIGUSR1:
        flags["usr1"] = True
    else:
        flags["stop"] = True
    try:
        os.write(wake_w, b"x")
    except OSError:
        pass


for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, on_signal)

# Scheduling latency adds straight to the emulated delay: ask for a real-time
# class when allowed (the loop sleeps in select, so it cannot hog a CPU).
scheduler = "other"
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    scheduler = "fifo"
except (OSError, AttributeError):
    pass

# No reference cycles are created per packet: the collector's pauses would only add jitter.
gc.disable()

heap = []
seq = 0
last_release = {}
tx_free = {}
counters = {}
# lateSumMs/lateMaxMs: how long after its due time each packet was written
# back (the delay line's own contribution to the delay); rounds/fullRounds:
# rounds of reads, and those in which some device still had packets waiting
# after its READ_BATCH (a path's kernel queue not drained in one turn);
# cpuSeconds: this process's CPU time (user + system).
stats = {"passed": 0, "delayed": 0, "lost": 0, "overflow": 0, "writeErrors": 0, "queueDrops": 0, "mtuDrops": 0, "lateMaxMs": 0.0, "lateSumMs": 0.0, "maxQueue": 0, "reloads": 0, "wakeups": 0, "rounds": 0, "fullRounds": 0, "cpuSeconds": 0.0}
started = time.monotonic()


def count(pair, field, size=0):
    c = counters.get(pair)
    if c is None:
        c = counters[pair] = {"packets": 0, "bytes": 0, "lost": 0}
    c[field] += 1
    if size:
        c["bytes"] += size


def write_status():
    if not status_path:
        return
    times = os.times()
    stats["cpuSeconds"] = round(times.user + times.system, 3)
    body = {
        "pid": os.getpid(),
        "tuns": tun_names,
        "scheduler": scheduler,
        "uptimeSeconds": round(time.monotonic() - started, 3),
        "queued": len(heap),
        "links": {f"{s}>{d}": {"delayMs": v[0] * 1000, "jitterMs": v[1] * 1000, "loss": v[2], "rateMbit": round(8.0 / v[3] / 1e6, 3) if v[3] else 0, "queueMs": v[4] * 1000, "pathMtu": v[5]} for (s, d), v in links.items()},
        "stats": stats,
        "pairs": {f"{s}>{d}": c for (s, d), c in counters.items()},
    }
    tmp = status_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(body, f)
    os.replace(tmp, status_path)


write_status()
sys.stderr.write(f"wan-delay: {', '.join(tun_names)} up, {len(links)} links, scheduler {scheduler}\n")
sys.stderr.flush()

next_status = time.monotonic() + 1.0
read = os.read
write = os.write


def pass_through(fd, packet):
    """Write back at once what the delay line does not delay (non-IPv4, or no configured pair)."""
    try:
        write(fd, packet)
    except OSError:
        stats["writeErrors"] += 1
    stats["passed"] += 1


monotonic = time.monotonic
heappush = heapq.heappush
heappop = heapq.heappop


def receive(fd, packet, now):
    """Queue one packet read from fd for its pair's delay (or pass it through)."""
    global seq
    if len(packet) < 20 or packet[0] >> 4 != 4:
        pass_through(fd, packet)
        return
    pair = (region_of(packet[12:16]), region_of(packet[16:20]))
    link = links.get(pair)
    if link is None:
        pass_through(fd, packet)
        return
    delay, jitter, loss, per_byte, queue_limit, path_mtu = link
    # Too big for the path and not to be fragmented (DF, bit 0x40 of the
    # flags byte): dropped, and no ICMP "fragmentation needed" goes back, as
    # where ICMP is filtered. The sender's TCP keeps retransmitting the same
    # segment: the path-MTU blackhole.
    if path_mtu and len(packet) > path_mtu and packet[6] & 0x40:
        stats["mtuDrops"] += 1
        count(pair, "lost")
        return
    if loss and rng_of(pair).random() < loss:
        stats["lost"] += 1
        count(pair, "lost")
        return
    if len(heap) >= MAX_QUEUE:
        stats["overflow"] += 1
        return
    departure = now
    if per_byte:
        # The path's capacity: a packet leaves when the ones before it on the
        # same path have been sent (serialisation at the configured rate),
        # and a path whose backlog exceeds its buffer drops at the tail, as a
        # router's queue does. This also keeps any one path from taking more
        # of this process's CPU than its share.
        start = tx_free.get(pair, 0.0)
        if start < now:
            start = now
        if start - now > queue_limit:
            stats["queueDrops"] += 1
            count(pair, "lost")
            return
        departure = start + len(packet) * per_byte
        tx_free[pair] = departure
    if jitter:
        delay = max(0.0, delay + rng_of(pair).uniform(-jitter, jitter))
    release = departure + delay
    previous = last_release.get(pair, 0.0)
    if release < previous:
        release = previous
    last_release[pair] = release
    seq += 1
    heappush(heap, (release, seq, fd, packet))
    count(pair, "packets", len(packet))


def release_due():
    now = monotonic()
    while heap and heap[0][0] <= now:
        release, _, fd, packet = heappop(heap)
        late = (now - release) * 1000
        stats["lateSumMs"] += late
        if late > stats["lateMaxMs"]:
            stats["lateMaxMs"] = late
        try:
            write(fd, packet)
        except OSError:
            stats["writeErrors"] += 1
        stats["delayed"] += 1


watched = tun_fds + [wake_r]
while not flags["stop"]:
    now = monotonic()
    timeout = max(0.0, heap[0][0] - now) if heap else 1.0
    timeout = min(timeout, max(0.0, next_status - now))
    stats["wakeups"] += 1
    try:
        ready, _, _ = select.select(watched, [], [], timeout)
    except InterruptedError:
        ready = []
    if wake_r in ready:
        try:
            os.read(wake_r, 4096)
        except BlockingIOError:
            pass
    if flags["hup"]:
        flags["hup"] = False
        try:
            fresh = load(config_path)
            links = parse_links(fresh.get("links", {}))
            seed = int(fresh.get("seed", 1))
            rngs = {}
            stats["reloads"] += 1
        except Exception as error:  # keep the old links on a bad file
            sys.stderr.write(f"wan-delay: reload failed, keeping the old links: {error}\n")
    if flags["usr1"]:
        flags["usr1"] = False
        write_status()
    # Rounds over every device until none has anything left: a device that
    # was empty at select time may have filled since, so each round tries
    # them all (an empty non-blocking read costs a microsecond).
    busy = any(fd in ready for fd in tun_fds)
    while busy:
        busy = False
        now = monotonic()
        for fd in tun_fds:
            for _ in range(READ_BATCH):
                try:
                    packet = read(fd, 65535)
                except BlockingIOError:
                    break
                receive(fd, packet, now)
            else:
                busy = True
        stats["rounds"] += 1
        if busy:
            stats["fullRounds"] += 1
        if len(heap) > stats["maxQueue"]:
            stats["maxQueue"] = len(heap)
        release_due()
    release_due()
    now = monotonic()
    if now >= next_status:
        write_status()
        next_status = now + 1.0

write_status()
sys.stderr.write("wan-delay: stopped\n")
