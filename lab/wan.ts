import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { INTER_REGION_PATH_MTU, nodesWithRole, splitRegionPair, type ClusterPlan, type NodePlan } from "../plan";
import { exec, run, sleep } from "./exec";
import { CLIENT, NODE_LINK_MTU, ROUTER_NS, type LabLayout } from "./layout";
import { namespacePids } from "./netns";

/**
 * The lab's WAN emulator (no sch_netem in this kernel, LAB-NOTES.md): in the
 * router namespace, packets that arrive from one region's bridge and are
 * addressed to another region are policy-routed into a TUN device; a delay
 * line (lab/assets/wan-delay.py, Python in the router's own overlay root)
 * reads them, maps their IPv4 addresses to regions with the plan's subnets,
 * and writes each back after the one-way delay of its (source region,
 * destination region) pair — half the RTT of `plan.config.etcd.rttMs` —
 * with optional jitter and loss. Written back, a packet comes in on the TUN
 * device and follows the main table to its bridge, so it does not loop.
 * Traffic inside a region is bridged and never reaches the router's IP layer.
 *
 * Partitions are separate and work with or without the delay line: a
 * `blackhole` rule per (bridge, other region's subnet) drops a pair's packets
 * silently in both directions (packets already in the delay line still
 * arrive, like packets already on the wire).
 *
 * Each path has a capacity (WanOptions.rateMbit) and a buffer: packets
 * leave a path one after the other at that rate, then take its delay. Where
 * the milliseconds went without it (`lab wan bench --rate-mbit 0`, 5 runs):
 * not the CPU on average (the delay line used 56 % of a core) and not one
 * kernel queue shared by all paths (a device per path alone changed
 * nothing), but TCP's line-rate bursts. A burst of
 * hundreds of segments fell due at once and was written back one packet at
 * a time (≈ 15 µs each); a packet of another path due meanwhile waited
 * behind it: written back 1.2–3 ms late on average, and ping Tokyo → Seoul
 * rose from 31.8 to 39.6 ms (median of 5 runs) during a Seoul ⇄ Singapore
 * transfer. With departures paced at 100 Mbit/s no burst falls due at once:
 * 0.12 ms late on average, and the ping stays at 31.6 ms (docs/lab.md table).
 *
 * Each ordered pair of regions also has a TUN device (and routing table) of
 * its own, as each inter-region path has its own queues on a real WAN, and
 * the delay line reads the devices in turn, a few packets from each: should
 * it fall behind, only the busy path's kernel queue grows. (Measured: no
 * difference while it keeps up, which the capacity ensures here.)
 */

/** TUN device of the link with this index in WanSpec.links (a name of at most 15 characters). */
export function wanTun(index: number): string {
  return `wan${index}`;
}
/** Routing table of the link with this index: WAN_TABLE + index. */
export const WAN_TABLE = 100;
export const WAN_RULE_PREF = 100;
export const PARTITION_RULE_PREF = 40;

/** Inside the router root (tmpfs /run) and every host root. */
const LAB_RUN = "/run/pgha-lab";
const DELAY_SCRIPT = `${LAB_RUN}/wan-delay.py`;
const DELAY_CONFIG = `${LAB_RUN}/wan-delay.json`;
const DELAY_STATUS = `${LAB_RUN}/wan-status.json`;
const TCP_PROBE = `${LAB_RUN}/tcp-rtt.py`;

export interface WanOptions {
  /** Uniform jitter ± this many ms on every one-way delay (never reorders a pair's packets). */
  jitterMs: number;
  /** Loss per packet and direction, in percent. */
  lossPercent: number;
  /** Seed of the delay line's random generator (jitter and loss). */
  seed: number;
  /**
   * Capacity of each path in Mbit/s (0: unlimited). Unlimited, TCP's
   * line-rate bursts fall due together and delay every other path's packets
   * (see the top of this file). 100 Mbit/s (≈ 8 300 full-size packets/s a
   * path) paces them; a lab transfer still crosses at ≈ 9.5 MiB/s.
   */
  rateMbit: number;
  /** Each path's buffer, in ms at its rate: a packet that would wait longer is dropped (tail drop). */
  queueMs: number;
  /**
   * Largest packet a path carries (0: any). A bigger one with Don't Fragment
   * set is dropped, and no ICMP "fragmentation needed" is sent, as on a path
   * whose ICMP is filtered: path-MTU discovery cannot work. The default is
   * the plan's INTER_REGION_PATH_MTU (8500, what AWS documents for
   * inter-Region VPC peering), while the nodes' interfaces carry 9001
   * (NODE_LINK_MTU).
   */
  pathMtu: number;
}

export const DEFAULT_WAN_OPTIONS: WanOptions = { jitterMs: 0, lossPercent: 0, seed: 1, rateMbit: 100, queueMs: 200, pathMtu: INTER_REGION_PATH_MTU };

export interface WanLink {
  from: string;
  to: string;
  /** Configured round trip (plan.config.etcd.rttMs). */
  rttMs: number;
  oneWayMs: number;
  jitterMs: number;
  lossPercent: number;
  /** The link's own TUN device and routing table in the router namespace. */
  tun: string;
  table: number;
}

export interface WanSpec {
  options: WanOptions;
  links: WanLink[];
  subnets: { cidr: string; region: string; bridge: string }[];
}

function nonNegative(name: string, raw: string | undefined, fallback: number, max = Infinity): number {
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > max) throw new Error(`${name} must be a number between 0 and ${max}, got ${JSON.stringify(raw)}`);
  return value;
}

/** PGHA_LAB_WAN=1 turns the emulator on; PGHA_LAB_WAN_JITTER_MS, _LOSS_PERCENT, _SEED, _RATE_MBIT, _QUEUE_MS and _PATH_MTU tune it. */
export function wanOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): WanOptions | undefined {
  const flag = (env.PGHA_LAB_WAN ?? "").trim().toLowerCase();
  if (!["1", "true", "yes", "on"].includes(flag)) {
    if (!["", "0", "false", "no", "off"].includes(flag)) throw new Error(`PGHA_LAB_WAN must be 1 or 0, got ${JSON.stringify(env.PGHA_LAB_WAN)}`);
    return undefined;
  }
  return {
    jitterMs: nonNegative("PGHA_LAB_WAN_JITTER_MS", env.PGHA_LAB_WAN_JITTER_MS, DEFAULT_WAN_OPTIONS.jitterMs, 1000),
    lossPercent: nonNegative("PGHA_LAB_WAN_LOSS_PERCENT", env.PGHA_LAB_WAN_LOSS_PERCENT, DEFAULT_WAN_OPTIONS.lossPercent, 100),
    seed: Math.trunc(nonNegative("PGHA_LAB_WAN_SEED", env.PGHA_LAB_WAN_SEED, DEFAULT_WAN_OPTIONS.seed)),
    rateMbit: nonNegative("PGHA_LAB_WAN_RATE_MBIT", env.PGHA_LAB_WAN_RATE_MBIT, DEFAULT_WAN_OPTIONS.rateMbit, 100_000),
    queueMs: nonNegative("PGHA_LAB_WAN_QUEUE_MS", env.PGHA_LAB_WAN_QUEUE_MS, DEFAULT_WAN_OPTIONS.queueMs, 10_000),
    pathMtu: Math.trunc(nonNegative("PGHA_LAB_WAN_PATH_MTU", env.PGHA_LAB_WAN_PATH_MTU, DEFAULT_WAN_OPTIONS.pathMtu, 65_535)),
  };
}

/** Configured RTT between two regions (0 inside a region); throws when the plan has none. */
export function configuredRttMs(plan: ClusterPlan, a: string, b: string): number {
  if (a === b) return 0;
  const names = plan.regions.map((r) => r.name);
  for (const [pair, ms] of Object.entries(plan.config.etcd.rttMs)) {
    const [x, y] = splitRegionPair(pair, names);
    if ((x === a && y === b) || (x === b && y === a)) return ms;
  }
  throw new Error(`no RTT for ${a}-${b} in plan.config.etcd.rttMs (the WAN emulator needs every pair of regions)`);
}

/** One link per ordered pair of regions, one way = RTT / 2. */
export function wanSpec(plan: ClusterPlan, layout: LabLayout, options: WanOptions = DEFAULT_WAN_OPTIONS): WanSpec {
  const links: WanLink[] = [];
  for (const a of plan.regions) {
    for (const b of plan.regions) {
      if (a.name === b.name) continue;
      const rttMs = configuredRttMs(plan, a.name, b.name);
      const index = links.length;
      links.push({
        from: a.name,
        to: b.name,
        rttMs,
        oneWayMs: rttMs / 2,
        jitterMs: options.jitterMs,
        lossPercent: options.lossPercent,
        tun: wanTun(index),
        table: WAN_TABLE + index,
      });
    }
  }
  return { options, links, subnets: layout.subnets.map((s) => ({ cidr: s.cidr, region: s.region, bridge: s.bridge })) };
}

/** What wan-delay.py reads. */
export function delayLineConfig(spec: WanSpec): Record<string, unknown> {
  return {
    tuns: spec.links.map((l) => l.tun),
    seed: spec.options.seed,
    status: DELAY_STATUS,
    subnets: spec.subnets.map((s) => [s.cidr, s.region]),
    links: Object.fromEntries(
      spec.links.map((l) => [
        `${l.from}>${l.to}`,
        { delayMs: l.oneWayMs, jitterMs: l.jitterMs, loss: l.lossPercent / 100, rateMbit: spec.options.rateMbit, queueMs: spec.options.queueMs, pathMtu: spec.options.pathMtu },
      ]),
    ),
  };
}

/** `ip rule add` arguments steering inter-region packets from each bridge into their link's table (→ the link's TUN device). */
export function wanRuleArgs(spec: WanSpec): string[][] {
  const rules: string[][] = [];
  for (const from of spec.subnets) {
    for (const to of spec.subnets) {
      if (to.region === from.region) continue;
      const link = spec.links.find((l) => l.from === from.region && l.to === to.region);
      if (!link) throw new Error(`internal: no WAN link ${from.region} → ${to.region}`);
      rules.push(["pref", String(WAN_RULE_PREF), "iif", from.bridge, "to", to.cidr, "lookup", String(link.table)]);
    }
  }
  return rules;
}

/** `ip rule` arguments (without add/del) that drop everything between two regions, both directions. */
export function partitionRuleArgs(layout: LabLayout, a: string, b: string): string[][] {
  if (a === b) throw new Error(`cannot partition ${a} from itself`);
  const of = (region: string): LabLayout["subnets"] => {
    const found = layout.subnets.filter((s) => s.region === region);
    if (!found.length) throw new Error(`no region ${JSON.stringify(region)} (regions: ${[...new Set(layout.subnets.map((s) => s.region))].join(", ")})`);
    return found;
  };
  const rules: string[][] = [];
  for (const [x, y] of [
    [of(a), of(b)],
    [of(b), of(a)],
  ] as const) {
    for (const from of x) for (const to of y) rules.push(["pref", String(PARTITION_RULE_PREF), "iif", from.bridge, "to", to.cidr, "blackhole"]);
  }
  return rules;
}

const routerIp = (...args: string[]): Promise<string> => run(["ip", "-n", ROUTER_NS, ...args]);

async function routerSysctl(key: string, value: string): Promise<void> {
  await run(["ip", "netns", "exec", ROUTER_NS, "sysctl", "-q", "-w", `${key}=${value}`]);
}

/** The router's root: an overlay over the rootfs with /proc, a /dev holding null, urandom and net/tun, and tmpfs /run and /tmp. */
async function mountRouterRoot(layout: LabLayout, rootfs: string): Promise<void> {
  const { root, upper, work, logDir } = layout.router;
  for (const dir of [root, upper, work, logDir]) fs.mkdirSync(dir, { recursive: true });
  await run(["mount", "-t", "overlay", "overlay", "-o", `lowerdir=${rootfs},upperdir=${upper},workdir=${work}`, root]);
  await run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", path.join(root, "proc")]);
  const dev = path.join(root, "dev");
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,mode=0755,size=1m", "tmpfs", dev]);
  for (const [name, major, minor] of [
    ["null", 1, 3],
    ["zero", 1, 5],
    ["urandom", 1, 9],
  ] as const) {
    await run(["mknod", "-m", "0666", path.join(dev, name), "c", String(major), String(minor)]);
  }
  fs.mkdirSync(path.join(dev, "net"));
  await run(["mknod", "-m", "0600", path.join(dev, "net", "tun"), "c", "10", "200"]);
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=0755,size=16m", "tmpfs", path.join(root, "run")]);
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=16m", "tmpfs", path.join(root, "tmp")]);
  fs.mkdirSync(path.join(root, "run", "pgha-lab"), { recursive: true });
}

export function delayLineLog(layout: LabLayout): string {
  return path.join(layout.router.logDir, "wan-delay.log");
}

function routerFile(layout: LabLayout, file: string): string {
  return path.join(layout.router.root, file);
}

export interface DelayLineStatus {
  pid: number;
  scheduler: string;
  uptimeSeconds: number;
  queued: number;
  tuns: string[];
  links: Record<string, { delayMs: number; jitterMs: number; loss: number; rateMbit: number; queueMs: number; pathMtu: number }>;
  stats: {
    passed: number;
    delayed: number;
    lost: number;
    overflow: number;
    writeErrors: number;
    /** Packets dropped because their path's buffer (queueMs at rateMbit) was full. */
    queueDrops: number;
    /** Packets over their path's MTU with Don't Fragment set, dropped without an ICMP answer. */
    mtuDrops: number;
    /** How late packets were written back after their due time: the delay line's own share of the delay. */
    lateMaxMs: number;
    lateSumMs: number;
    maxQueue: number;
    reloads: number;
    wakeups: number;
    rounds: number;
    /** Rounds after which some device still had packets waiting (its kernel queue not drained in one turn). */
    fullRounds: number;
    /** The process's CPU time (user + system) so far. */
    cpuSeconds: number;
  };
  pairs: Record<string, { packets: number; bytes: number; lost: number }>;
}

function readStatus(layout: LabLayout): DelayLineStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(routerFile(layout, DELAY_STATUS), "utf8")) as DelayLineStatus;
  } catch {
    return undefined;
  }
}

/** The delay line's counters, fresh (SIGUSR1 makes it write them); undefined when it is not running. */
export async function delayLineStatus(layout: LabLayout): Promise<DelayLineStatus | undefined> {
  const before = readStatus(layout);
  if (!before || !(await namespacePids(ROUTER_NS)).includes(before.pid)) return undefined;
  const file = routerFile(layout, DELAY_STATUS);
  const mtime = fs.statSync(file).mtimeMs;
  process.kill(before.pid, "SIGUSR1");
  for (let i = 0; i < 40 && fs.statSync(file).mtimeMs === mtime; i++) await sleep(25);
  return readStatus(layout);
}

/** The settings of the running emulator, or undefined for a LAN lab. */
export function readWanSpec(layout: LabLayout): WanSpec | undefined {
  try {
    return JSON.parse(fs.readFileSync(layout.wanFile, "utf8")) as WanSpec;
  } catch {
    return undefined;
  }
}

/**
 * Turns the WAN on in a freshly created network (after createNetwork): the
 * router root, the TUN device, the delay line, then the routes and rules
 * that feed it. Returns the spec (also written to layout.wanFile).
 */
export async function startWan(plan: ClusterPlan, layout: LabLayout, rootfs: string, options: WanOptions, log: (line: string) => void = () => undefined): Promise<WanSpec> {
  const spec = wanSpec(plan, layout, options);
  await mountRouterRoot(layout, rootfs);
  fs.copyFileSync(path.join(__dirname, "assets", "wan-delay.py"), routerFile(layout, DELAY_SCRIPT));
  fs.writeFileSync(routerFile(layout, DELAY_CONFIG), JSON.stringify(delayLineConfig(spec), null, 2));
  // Persistent devices: if the delay line died, inter-region packets would be
  // dropped (loudly wrong), never silently routed without delay.
  for (const link of spec.links) {
    await routerIp("tuntap", "add", "dev", link.tun, "mode", "tun");
    await routerIp("link", "set", link.tun, "txqueuelen", "10000");
    // At least the nodes' MTU: the path MTU is the delay line's to enforce (silently), not the router's
    // (whose kernel would answer with ICMP "fragmentation needed" and let path-MTU discovery work).
    await routerIp("link", "set", link.tun, "mtu", String(NODE_LINK_MTU));
  }
  const out = fs.openSync(delayLineLog(layout), "a");
  const child = spawn("ip", ["netns", "exec", ROUTER_NS, "chroot", layout.router.root, "/usr/bin/python3", DELAY_SCRIPT, DELAY_CONFIG], {
    detached: true,
    stdio: ["ignore", out, out],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" },
  });
  child.unref();
  fs.closeSync(out);
  let status: DelayLineStatus | undefined;
  for (let i = 0; i < 100 && !(status = readStatus(layout)); i++) await sleep(50);
  if (!status) throw new Error(`the WAN delay line did not start (see ${delayLineLog(layout)}): ${fs.readFileSync(delayLineLog(layout), "utf8").trim().slice(-500)}`);
  for (const link of spec.links) {
    await routerIp("link", "set", link.tun, "up");
    await routerSysctl(`net.ipv4.conf.${link.tun}.rp_filter`, "0");
    await routerIp("route", "add", "default", "dev", link.tun, "table", String(link.table));
  }
  for (const rule of wanRuleArgs(spec)) await routerIp("rule", "add", ...rule);
  fs.writeFileSync(layout.wanFile, JSON.stringify(spec, null, 2));
  const pairs = spec.links.filter((l) => l.from < l.to).map((l) => `${l.from}-${l.to} ${l.rttMs} ms`);
  log(
    `WAN: delay line pid ${status.pid} (${status.scheduler} scheduling) on ${spec.links.map((l) => l.tun).join(", ")}: RTT ${pairs.join(", ")}${options.jitterMs ? `, jitter ±${options.jitterMs} ms` : ""}${options.lossPercent ? `, loss ${options.lossPercent}%` : ""}`,
  );
  return spec;
}

/** Changes jitter/loss (and the seed) of the running delay line without dropping queued packets; resolves once applied. */
export async function retuneWan(layout: LabLayout, plan: ClusterPlan, options: WanOptions): Promise<WanSpec> {
  const current = readWanSpec(layout);
  const status = readStatus(layout);
  if (!current || !status || !(await namespacePids(ROUTER_NS)).includes(status.pid)) throw new Error("the WAN emulator is not running (bring the lab up with --wan)");
  const spec = wanSpec(plan, layout, options);
  fs.writeFileSync(routerFile(layout, DELAY_CONFIG), JSON.stringify(delayLineConfig(spec), null, 2));
  const reloadsBefore = (await delayLineStatus(layout))?.stats.reloads ?? 0;
  process.kill(status.pid, "SIGHUP");
  fs.writeFileSync(layout.wanFile, JSON.stringify(spec, null, 2));
  // Returns once the delay line has applied it: a probe sent right after must
  // see the new links and the reseeded generators, however loaded the machine.
  const deadline = Date.now() + 10_000;
  while (((await delayLineStatus(layout))?.stats.reloads ?? 0) <= reloadsBefore) {
    if (Date.now() > deadline) throw new Error("the WAN emulator did not apply the new settings within 10 s");
    await sleep(25);
  }
  return spec;
}

interface RuleJson {
  priority?: number;
  iif?: string;
  dst?: string;
  dstlen?: number;
  action?: string;
}

async function routerRules(): Promise<RuleJson[]> {
  return JSON.parse(await routerIp("-j", "rule", "show")) as RuleJson[];
}

/** Drops every packet between regions a and b (both directions) until healed. */
export async function partitionRegions(layout: LabLayout, a: string, b: string): Promise<void> {
  const existing = await routerRules();
  for (const rule of partitionRuleArgs(layout, a, b)) {
    const [, , , bridge, , cidr] = rule;
    const present = existing.some((r) => r.priority === PARTITION_RULE_PREF && r.iif === bridge && `${r.dst}/${r.dstlen}` === cidr);
    if (!present) await routerIp("rule", "add", ...rule);
  }
}

/** Removes partitions: between a and b, or all of them. Returns the region pairs healed. */
export async function healPartitions(layout: LabLayout, a?: string, b?: string): Promise<string[]> {
  const regionOf = (bridge?: string, cidr?: string): string | undefined => layout.subnets.find((s) => (bridge ? s.bridge === bridge : s.cidr === cidr))?.region;
  const healed = new Set<string>();
  for (const r of await routerRules()) {
    if (r.priority !== PARTITION_RULE_PREF || r.action !== "blackhole" || !r.iif || !r.dst) continue;
    const from = regionOf(r.iif);
    const to = regionOf(undefined, `${r.dst}/${r.dstlen}`);
    if (a && b && !((from === a && to === b) || (from === b && to === a))) continue;
    await routerIp("rule", "del", "pref", String(PARTITION_RULE_PREF), "iif", r.iif, "to", `${r.dst}/${r.dstlen}`, "blackhole");
    healed.add([from, to].sort().join("-"));
  }
  return [...healed];
}

/** Region pairs currently partitioned. */
export async function listPartitions(layout: LabLayout): Promise<string[]> {
  const pairs = new Set<string>();
  for (const r of await routerRules()) {
    if (r.priority !== PARTITION_RULE_PREF || r.action !== "blackhole") continue;
    const from = layout.subnets.find((s) => s.bridge === r.iif)?.region;
    const to = layout.subnets.find((s) => s.cidr === `${r.dst}/${r.dstlen}`)?.region;
    pairs.add([from ?? "?", to ?? "?"].sort().join("-"));
  }
  return [...pairs];
}

/** What the router really has: the WAN rules present, the TUN up, the delay line alive. */
export async function wanHealth(layout: LabLayout): Promise<{ ok: boolean; detail: string }> {
  const spec = readWanSpec(layout);
  if (!spec) return { ok: true, detail: "WAN emulator off (LAN lab)" };
  const problems: string[] = [];
  const status = await delayLineStatus(layout);
  if (!status) problems.push("delay line not running");
  const rules = await routerRules();
  const wanRules = rules.filter((r) => r.priority === WAN_RULE_PREF);
  if (wanRules.length !== wanRuleArgs(spec).length) problems.push(`${wanRules.length} WAN rules, expected ${wanRuleArgs(spec).length}`);
  for (const { tun } of spec.links) {
    const link = await exec(["ip", "-n", ROUTER_NS, "-o", "link", "show", tun]);
    if (!/[<,]UP[,>]/.test(link.stdout)) problems.push(`${tun} is not up`);
  }
  const partitions = await listPartitions(layout);
  const detail = problems.length
    ? problems.join("; ")
    : `delay line pid ${status?.pid}: ${status?.stats.delayed} packets delayed, ${status?.stats.lost} lost, late max ${status?.stats.lateMaxMs.toFixed(2)} ms${partitions.length ? `; partitioned: ${partitions.join(", ")}` : ""}`;
  return { ok: problems.length === 0, detail };
}

// ---------------------------------------------------------------------------
// Statistics

export function quantile(values: number[], q: number): number {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export interface Spread {
  n: number;
  medianMs: number;
  minMs: number;
  p10Ms: number;
  p90Ms: number;
  maxMs: number;
}

export function spread(values: number[]): Spread {
  const r = (v: number): number => Math.round(v * 1000) / 1000;
  return {
    n: values.length,
    medianMs: r(quantile(values, 0.5)),
    minMs: r(Math.min(...values)),
    p10Ms: r(quantile(values, 0.1)),
    p90Ms: r(quantile(values, 0.9)),
    maxMs: r(Math.max(...values)),
  };
}

// ---------------------------------------------------------------------------
// Probes between hosts: ping and TCP round trips, run inside the host namespaces.

/** The minimum a host-side runner needs (LabTransport satisfies it). */
export interface ProbeRunner {
  run(node: string, argv: string[], options?: { timeoutMs?: number; env?: Record<string, string>; input?: string }): Promise<{ code: number; stdout: string; stderr: string }>;
  spawn(
    node: string,
    argv: string[],
    options?: { env?: Record<string, string> },
  ): { onLine(handler: (line: string) => void): void; stop(): Promise<number>; stderr(): string; readonly exited: Promise<number> };
}

export function parsePingTimes(stdout: string): number[] {
  return [...stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

export async function pingRtts(runner: ProbeRunner, from: string, toIp: string, count = 20, intervalS = 0.05): Promise<number[]> {
  const result = await runner.run(from, ["ping", "-n", "-c", String(count), "-i", String(intervalS), "-W", "2", toIp], { timeoutMs: 30_000 });
  return parsePingTimes(result.stdout);
}

/** Puts the TCP probe into a node's /run through the node's own shell (a machine's /run is its own tmpfs). */
export async function installProbe(runner: ProbeRunner, node: string): Promise<void> {
  const script = fs.readFileSync(path.join(__dirname, "assets", "tcp-rtt.py"), "utf8");
  const result = await runner.run(node, ["sh", "-c", `mkdir -p ${LAB_RUN} && cat > ${TCP_PROBE}`], { input: script, timeoutMs: 30_000 });
  if (result.code !== 0) throw new Error(`${node}: installing the TCP probe failed: ${result.stderr.trim()}`);
}

async function installProbes(runner: ProbeRunner, layout: LabLayout): Promise<void> {
  await Promise.all(layout.hosts.map((host) => installProbe(runner, host.name)));
}

const PROBE_PORT = 7999;

type ProbeServer = ReturnType<ProbeRunner["spawn"]>;

/** Resolves once the TCP echo server printed "listening"; throws when it exits or stays silent for 10 s. */
export async function listening(server: ProbeServer): Promise<void> {
  const ready = new Promise<void>((resolve) => {
    server.onLine((line) => {
      if (line.trim() === "listening") resolve();
    });
  });
  const started = await Promise.race([ready.then(() => true), sleep(10_000).then(() => false), server.exited.then(() => false)]);
  if (!started) throw new Error(`the TCP echo server did not start: ${server.stderr().trim().slice(-300)}`);
}

/** TCP connect time (one SYN/SYN-ACK round trip) and `count` request/echo round trips from `from` to `to`. */
export async function tcpRtts(runner: ProbeRunner, from: string, to: string, toIp: string, count = 20): Promise<{ connectMs: number; rttMs: number[] }> {
  const server = runner.spawn(to, ["python3", TCP_PROBE, "serve", toIp, String(PROBE_PORT), "30"]);
  try {
    await listening(server);
    const result = await runner.run(from, ["python3", TCP_PROBE, "probe", toIp, String(PROBE_PORT), String(count)], { timeoutMs: 30_000 });
    if (result.code !== 0) throw new Error(`TCP probe ${from} → ${to} failed: ${result.stderr.trim().slice(-300)}`);
    return JSON.parse(result.stdout.trim().split("\n").at(-1) as string) as { connectMs: number; rttMs: number[] };
  } finally {
    await server.stop();
  }
}

export interface RttRow {
  kind: "ping" | "tcp" | "tcp-connect";
  from: string;
  to: string;
  fromRegion: string;
  toRegion: string;
  /** Configured RTT (0 inside a region). */
  expectedMs: number;
  rtt: Spread;
  /** See {@link judgeRtt}: on the median for ping, on the p10 for tcp; not judged for tcp-connect (one sample). */
  ok: boolean;
  judged: boolean;
}

/**
 * The delay line never releases a packet early, so a median below the
 * configured RTT by more than the clock's granularity means the delay is not
 * applied: a hard bound.
 */
export const INTER_FLOOR_MS = 0.5;
/**
 * Above the configured RTT, the probes' own scheduling adds to every sample:
 * the TCP probe's echo runs in user space, and on a loaded 2-core machine
 * (CI with a CPU hog or a parallel `npm test`) a wake-up can wait a few ms.
 * Idle medians here are +0.2 to +0.7 ms; 3 ms + 5 % still fails a link that
 * carries another pair's delay (≥ 1 ms off for every pair of the plan) or
 * whose queue is shared with a transfer (+5 ms measured).
 */
export const INTER_SLACK_MS = 3;
export const INTER_SLACK_FRACTION = 0.05;
/** Inside a region the path never crosses the delay line: even loaded, far below the shortest inter-region RTT (31 ms). */
export const INTRA_LIMIT_MS = 3;

export function judgeRtt(expectedMs: number, medianMs: number): boolean {
  if (expectedMs === 0) return medianMs < INTRA_LIMIT_MS;
  return medianMs >= expectedMs - INTER_FLOOR_MS && medianMs <= expectedMs * (1 + INTER_SLACK_FRACTION) + INTER_SLACK_MS;
}

export interface ProofHost {
  name: string;
  ip: string;
  region: string;
}

/**
 * The host pairs the proof measures: for every ordered pair of regions one
 * representative host each (the first postgres node, else the first node);
 * inside every region the representative and each other host of the region
 * (HAProxy, the client).
 */
export function proofPairs(plan: ClusterPlan, layout: LabLayout): { inter: [ProofHost, ProofHost][]; intra: [ProofHost, ProofHost][] } {
  const hostsOf = (region: string): ProofHost[] => layout.hosts.filter((h) => h.region === region).map((h) => ({ name: h.name, ip: h.link.address, region }));
  const rep = (region: string): ProofHost => {
    const pg = plan.nodes.find((n: NodePlan) => n.region === region && n.roles.has("postgres"));
    const hosts = hostsOf(region);
    return hosts.find((h) => h.name === pg?.name) ?? hosts[0];
  };
  const regions = plan.regions.map((r) => r.name).filter((r) => hostsOf(r).length > 0);
  const inter: [ProofHost, ProofHost][] = [];
  for (const a of regions) for (const b of regions) if (a !== b) inter.push([rep(a), rep(b)]);
  const intra: [ProofHost, ProofHost][] = [];
  for (const r of regions) for (const h of hostsOf(r)) if (h.name !== rep(r).name) intra.push([rep(r), h]);
  return { inter, intra };
}

export interface WanProof {
  ok: boolean;
  rows: RttRow[];
  partition: { pair: string; repliesWhileCut: number; repliesAfterHeal: number; ok: boolean }[];
  delayLine?: DelayLineStatus;
}

/**
 * Point 2 of the WAN issue, automated: ping (both directions) and TCP
 * request/echo round trips (one direction, plus the connect time) between
 * every pair of regions show the configured RTT (never below it, at most
 * 3 ms + 5 % above, see {@link judgeRtt}), and inside every region stay
 * under 3 ms; then each pair is partitioned for a moment
 * (far shorter than etcd's election timeout) and must see no reply, and
 * replies again once healed.
 */
export async function proveWan(
  plan: ClusterPlan,
  layout: LabLayout,
  runner: ProbeRunner,
  options: { count?: number; partitions?: boolean; log?: (line: string) => void } = {},
): Promise<WanProof> {
  const count = options.count ?? 20;
  const log = options.log ?? (() => undefined);
  await installProbes(runner, layout);
  const { inter, intra } = proofPairs(plan, layout);
  const rows: RttRow[] = [];
  const add = (kind: RttRow["kind"], a: ProofHost, b: ProofHost, samples: number[]): void => {
    const expectedMs = configuredRttMs(plan, a.region, b.region);
    const rtt = spread(samples);
    const judged = kind !== "tcp-connect";
    // The TCP echo is answered in user space on both ends: at load average 12 on this 2-core machine its median
    // was 5.8 ms over (ping, answered by the kernel, +0.4) while its p10 stayed at the configured RTT. So TCP is
    // judged on p10: a link that carries extra delay raises every sample, the p10 included.
    const ok = samples.length > 0 && (!judged || judgeRtt(expectedMs, kind === "tcp" ? rtt.p10Ms : rtt.medianMs));
    rows.push({ kind, from: a.name, to: b.name, fromRegion: a.region, toRegion: b.region, expectedMs, rtt, ok, judged });
    log(
      `${ok ? "ok  " : "FAIL"} ${kind.padEnd(11)} ${a.name} → ${b.name}: median ${rtt.medianMs.toFixed(2)} ms (min ${rtt.minMs.toFixed(2)}, max ${rtt.maxMs.toFixed(2)}, n ${rtt.n}), configured ${expectedMs} ms`,
    );
  };
  for (const [a, b] of [...inter, ...intra]) {
    add("ping", a, b, await pingRtts(runner, a.name, b.ip, count));
    // TCP once per unordered pair (the echo crosses both directions).
    if (a.region !== b.region && a.region > b.region) continue;
    const tcp = await tcpRtts(runner, a.name, b.name, b.ip, count);
    add("tcp", a, b, tcp.rttMs);
    add("tcp-connect", a, b, [tcp.connectMs]);
  }
  const partition: WanProof["partition"] = [];
  if (options.partitions !== false) {
    for (const [a, b] of inter.filter(([x, y]) => x.region < y.region)) {
      await partitionRegions(layout, a.region, b.region);
      let cut: number[];
      try {
        // 3 echo requests in 0.3 s: far below etcd's election timeout, so the cluster does not notice.
        const result = await runner.run(a.name, ["ping", "-n", "-c", "3", "-i", "0.1", "-w", "0.3", b.ip], { timeoutMs: 10_000 });
        cut = parsePingTimes(result.stdout);
      } finally {
        await healPartitions(layout, a.region, b.region);
      }
      const after = await pingRtts(runner, a.name, b.ip, 3, 0.1);
      const ok = cut.length === 0 && after.length === 3;
      partition.push({ pair: `${a.region}-${b.region}`, repliesWhileCut: cut.length, repliesAfterHeal: after.length, ok });
      log(`${ok ? "ok  " : "FAIL"} partition  ${a.region}-${b.region}: ${cut.length}/3 replies while cut, ${after.length}/3 after heal`);
    }
  }
  const delayLine = readWanSpec(layout) ? await delayLineStatus(layout) : undefined;
  return { ok: rows.every((r) => r.ok) && partition.every((p) => p.ok), rows, partition, delayLine };
}

/** Markdown table of a proof. */
export function proofTable(proof: WanProof): string {
  const lines = ["| probe | from → to | configured RTT ms | median ms | min–max ms | n | check |", "|---|---|---:|---:|---:|---:|---|"];
  for (const r of proof.rows) {
    const check = !r.judged
      ? "(info)"
      : r.expectedMs === 0
        ? `< ${INTRA_LIMIT_MS} ms: ${r.ok ? "ok" : "FAIL"}`
        : `${r.ok ? "ok" : "FAIL"} (+${(r.rtt.medianMs - r.expectedMs).toFixed(2)} ms)`;
    lines.push(
      `| ${r.kind} | ${r.from} → ${r.to} | ${r.expectedMs} | ${r.rtt.medianMs.toFixed(2)} | ${r.rtt.minMs.toFixed(2)}–${r.rtt.maxMs.toFixed(2)} | ${r.rtt.n} | ${check} |`,
    );
  }
  return lines.join("\n");
}

/** Hosts of the client's region first (the order the proof and the measurements pick from). */
export function clientRegion(layout: LabLayout): string {
  return layout.hosts.find((h) => h.name === CLIENT)?.region ?? "";
}

export function haproxyNear(plan: ClusterPlan, region: string): NodePlan {
  const all = nodesWithRole(plan, "haproxy");
  const found = all.find((n) => n.region === region) ?? all[0];
  if (!found) throw new Error("no HAProxy node in the plan");
  return found;
}

// ---------------------------------------------------------------------------
// Isolation under a bulk transfer: the test asserts it, `lab wan bench` reports it.

export interface BulkIsolation {
  /** ping Tokyo → Seoul before the transfer, then while Seoul ⇄ Singapore carries it. */
  idle: Spread;
  during: Spread;
  bulk: { bytes: number; seconds: number; mibPerSecond: number };
  /** What the delay line did meanwhile (differences of its counters over the transfer). */
  delayLine: {
    packets: number;
    packetsPerSecond: number;
    cpuShare: number;
    lateMeanMs: number;
    queueDrops: number;
    overflow: number;
    writeErrors: number;
    fullRounds: number;
    rounds: number;
  };
}

const BULK_MSS = 1448;

/**
 * Streams `mbytes` from Seoul to Singapore and back through the echo server
 * while Tokyo pings Seoul: two paths the transfer does not use, so their RTT
 * should not move. Also says where any extra delay would come from: the
 * delay line's CPU share, how late it wrote packets back, and how often a
 * device's kernel queue was still full after its turn.
 */
export async function measureBulkIsolation(layout: LabLayout, runner: ProbeRunner, options: { mbytes?: number; pings?: number } = {}): Promise<BulkIsolation> {
  const mbytes = options.mbytes ?? 64;
  const pings = options.pings ?? 40;
  const ip = (name: string): string => {
    const host = layout.hosts.find((h) => h.name === name);
    if (!host) throw new Error(`no lab host ${name}`);
    return host.link.address;
  };
  await installProbes(runner, layout);
  const idle = spread(await pingRtts(runner, "pg-tokyo-1", ip("pg-seoul-1"), pings, 0.05));
  const server = runner.spawn("pg-singapore-1", ["python3", TCP_PROBE, "serve", ip("pg-singapore-1"), String(PROBE_PORT), "120"]);
  try {
    await listening(server);
    const before = await delayLineStatus(layout);
    if (!before) throw new Error("the WAN delay line is not running");
    const started = Date.now();
    // Standard Ethernet segments (MSS 1448): what is measured is the delay line's scheduling, whatever
    // routes the nodes have (on the network alone they have no path-MTU routes, see the MTU test).
    const bulk = runner.run("pg-seoul-1", ["python3", TCP_PROBE, "bulk", ip("pg-singapore-1"), String(PROBE_PORT), String(mbytes), String(BULK_MSS)], { timeoutMs: 120_000 });
    // Let the transfer leave slow start before sampling.
    await sleep(1000);
    const during = spread(await pingRtts(runner, "pg-tokyo-1", ip("pg-seoul-1"), pings, 0.05));
    const result = await bulk;
    const wallSeconds = (Date.now() - started) / 1000;
    if (result.code !== 0) throw new Error(`bulk transfer failed (exit ${result.code}): ${result.stderr.trim()}`);
    const { bytes, seconds } = JSON.parse(result.stdout.trim()) as { bytes: number; seconds: number };
    const after = await delayLineStatus(layout);
    if (!after) throw new Error("the WAN delay line stopped during the transfer");
    const d = (k: keyof DelayLineStatus["stats"]): number => after.stats[k] - before.stats[k];
    const packets = d("delayed");
    const r = (v: number, digits = 3): number => Math.round(v * 10 ** digits) / 10 ** digits;
    return {
      idle,
      during,
      bulk: { bytes, seconds, mibPerSecond: r(bytes / 2 ** 20 / seconds, 1) },
      delayLine: {
        packets,
        packetsPerSecond: Math.round(packets / seconds),
        cpuShare: r(d("cpuSeconds") / wallSeconds, 2),
        lateMeanMs: packets ? r(d("lateSumMs") / packets) : 0,
        queueDrops: d("queueDrops"),
        overflow: d("overflow"),
        writeErrors: d("writeErrors"),
        fullRounds: d("fullRounds"),
        rounds: d("rounds"),
      },
    };
  } finally {
    await server.stop();
  }
}

/**
 * The margin for ping on an untouched path during the transfer, from the idle
 * figure of the same run: × 1.15 + 3 ms. On a loaded 2-core machine the
 * probes, the transfer and the delay line share the cores; this still
 * passes "isolated" (measured: within 1 ms of idle) with room, and fails a
 * clearly queued path; unpaced paths measured +7.8 ms (+3.7 in an earlier
 * set), at the edge of the bound, so `lab wan bench` is the measure and this
 * only guards against gross regressions.
 */
export function isolationHolds(m: BulkIsolation): boolean {
  return m.during.medianMs <= 1.15 * m.idle.medianMs + 3;
}

/** One line for logs and the bench: the figures of a bulk-isolation run. */
export function bulkIsolationLine(m: BulkIsolation): string {
  const d = m.delayLine;
  return `bulk ${(m.bulk.bytes / 2 ** 20).toFixed(0)} MiB seoul ⇄ singapore: ${m.bulk.mibPerSecond} MiB/s each way, ${d.packetsPerSecond} packets/s through the delay line (CPU ${(d.cpuShare * 100).toFixed(0)} % of a core, written back ${d.lateMeanMs} ms late on average, ${d.queueDrops} tail drops, ${d.fullRounds}/${d.rounds} rounds left a queue unread); ping tokyo → seoul idle ${m.idle.medianMs} ms (p90 ${m.idle.p90Ms}), during ${m.during.medianMs} ms (p90 ${m.during.p90Ms}, max ${m.during.maxMs}): ${isolationHolds(m) ? "isolated" : "NOT isolated"}`;
}
