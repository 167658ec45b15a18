import * as fs from "node:fs";
import * as path from "node:path";
import { NODE_PATHS, type ClusterPlan } from "../plan";
import { clusterView, leaderOf, postgresNodes, sqlFromClient, type ClusterAccess } from "../checks/cluster";
import { sleep } from "./exec";
import type { LabContext } from "./lab";
import { CLIENT, hostLayout } from "./layout";
import type { RunningCommand } from "../checks/transport";
import { parseEnvironmentFile } from "../checks/env-file";
import { moveLeaderTo } from "./drills";
import { drillContext } from "./runner";
import { quickHealth } from "./verify";
import { clientRegion, configuredRttMs, haproxyNear, pingRtts, spread, type Spread } from "./wan";

/**
 * What the WAN costs the cluster (issue 6, point 3), measured from the
 * client namespace through HAProxy's primary port with pgbench (PostgreSQL
 * 17's, from the rootfs):
 *
 * - single-client commit latency: one autocommit INSERT per transaction,
 *   compared with the RTT from the primary to its sync standby (plus the
 *   client → HAProxy → primary path);
 * - synchronous vs asynchronous commit at 1, 8 and 32 clients (pgbench's
 *   built-in simple-update, scale 1): the async point sets
 *   `synchronous_commit=local` for the benchmark's sessions only (PGOPTIONS),
 *   so the cluster stays exactly as deployed (synchronous_mode on, the
 *   standby still streaming) and only the commit's wait for the standby goes;
 * - etcd at the derived heartbeat/election settings over a steady write load:
 *   raft term and leader of every member, leader-change and heartbeat-failure
 *   counters, etcd's own peer RTT, and the warnings in the etcd logs, at the
 *   start and the end of the window; the Patroni leader and timeline too.
 */

const PGBENCH = "/usr/lib/postgresql/17/bin/pgbench";
const COMMIT_TABLE = "lab_wan_commit";

export interface PgbenchResult {
  clients: number;
  mode: "sync" | "async";
  seconds: number;
  transactions: number;
  tps: number;
  latencyAverageMs: number;
  latency: Spread;
  failed: number;
}

function clientPath(lab: LabContext, file: string): string {
  return path.join(hostLayout(lab.layout, CLIENT).root, file);
}

export function conninfo(lab: LabContext): string {
  const haproxy = haproxyNear(lab.plan, clientRegion(lab.layout));
  return `host=${haproxy.privateIp} port=${lab.plan.config.haproxy.primaryPort} user=postgres dbname=postgres sslmode=require application_name=pgha-lab-wan`;
}

/** Per-transaction latencies (ms) from pgbench's --log files, removed afterwards. */
function readPgbenchLogs(lab: LabContext, prefix: string): number[] {
  const dir = clientPath(lab, path.posix.dirname(prefix));
  const base = path.posix.basename(prefix);
  const latencies: number[] = [];
  for (const name of fs.readdirSync(dir).filter((n) => n.startsWith(`${base}.`))) {
    const file = path.join(dir, name);
    for (const line of fs.readFileSync(file, "utf8").split("\n")) {
      const fields = line.trim().split(/\s+/);
      // client_id transaction_no time script_no time_epoch time_us; time is "failed"/"skipped" when not committed.
      if (fields.length >= 6 && /^\d+$/.test(fields[2])) latencies.push(Number(fields[2]) / 1000);
    }
    fs.rmSync(file, { force: true });
  }
  return latencies;
}

let runCounter = 0;

/** One pgbench run from the client namespace through HAProxy :5000. */
export async function pgbench(
  lab: LabContext,
  options: { clients: number; seconds: number; mode: "sync" | "async"; script?: string; builtin?: string; rate?: number },
): Promise<PgbenchResult> {
  const prefix = `/tmp/pgbench-wan-${process.pid}-${++runCounter}`;
  const argv = [
    PGBENCH,
    "-n",
    "-M",
    "prepared",
    "-c",
    String(options.clients),
    "-j",
    String(Math.min(options.clients, 2)),
    "-T",
    String(options.seconds),
    "--log",
    `--log-prefix=${prefix}`,
  ];
  if (options.script) argv.push("-f", options.script);
  else argv.push("-b", options.builtin ?? "simple-update");
  if (options.rate) argv.push("-R", String(options.rate));
  argv.push(conninfo(lab));
  const env: Record<string, string> = { PGPASSWORD: lab.access.superuserPassword };
  if (options.mode === "async") env.PGOPTIONS = "-c synchronous_commit=local";
  const result = await lab.transport.run(CLIENT, argv, { env, timeoutMs: (options.seconds + 60) * 1000 });
  if (result.code !== 0) throw new Error(`pgbench ${argv.slice(1, -1).join(" ")} failed (exit ${result.code}): ${(result.stderr || result.stdout).trim().slice(-800)}`);
  const num = (re: RegExp): number => Number(re.exec(result.stdout)?.[1] ?? NaN);
  const latencies = readPgbenchLogs(lab, prefix);
  return {
    clients: options.clients,
    mode: options.mode,
    seconds: options.seconds,
    transactions: num(/number of transactions actually processed: (\d+)/),
    tps: Math.round(num(/tps = ([\d.]+)/) * 10) / 10,
    latencyAverageMs: num(/latency average = ([\d.]+) ms/),
    latency: spread(latencies),
    failed: num(/number of failed transactions: (\d+)/) || 0,
  };
}

async function sqlViaHaproxy(lab: LabContext, sql: string): Promise<string> {
  const haproxy = haproxyNear(lab.plan, clientRegion(lab.layout));
  const result = await sqlFromClient(lab.access, haproxy.privateIp, lab.plan.config.haproxy.primaryPort, sql, { timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`SQL via ${haproxy.name} failed: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

export interface CommitLatency {
  primary: string;
  syncStandby: string;
  haproxy: string;
  /** Measured (ping medians) RTT of the application's path: client → HAProxy plus HAProxy → primary. */
  pathRttMs: number;
  primaryToSyncConfiguredMs: number;
  /** Ping primary → sync standby, measured right before. */
  primaryToSyncPing: Spread;
  /** Nearest replica of the primary by configured RTT (Patroni does not choose the sync standby by distance). */
  nearestReplica: string;
  nearestReplicaRttMs: number;
  /** The model: primary→sync ping + the client's path to the primary. */
  expectedMs: number;
  toleranceMs: number;
  commit: PgbenchResult;
  /**
   * The hard check: the median commit took at least the primary→sync round
   * trip (less 0.5 ms of clock granularity). Faster would mean the commit did
   * not wait for the standby across the WAN, i.e. it was not synchronous.
   */
  ok: boolean;
  /**
   * Within 10 % + 2 ms of the model: a figure, reported, not asserted. On a
   * loaded 2-core machine PostgreSQL's and pgbench's own scheduling add to
   * every commit.
   */
  withinModel: boolean;
  syncSettings: { synchronousCommit: string; synchronousStandbyNames: string };
}

/**
 * Single-client commit latency through HAProxy :5000 against the RTT to the
 * sync standby: never below the primary→sync ping RTT (asserted), and how
 * close to the model (primary→sync ping RTT + client→HAProxy and
 * HAProxy→primary ping RTTs, all measured right before) it came (reported).
 */
export async function commitLatency(lab: LabContext, seconds: number): Promise<CommitLatency> {
  const health = await quickHealth(lab.access);
  const { leader, syncStandby } = health.topology;
  if (!leader || !syncStandby) throw new Error(`no leader/sync standby: ${health.detail}`);
  const plan = lab.plan;
  const regionOf = (node: string): string => plan.nodes.find((n) => n.name === node)?.region ?? "";
  const haproxy = haproxyNear(plan, clientRegion(lab.layout));
  // The application's own path, measured (0 on a LAN lab whatever the plan's RTTs say).
  const clientToHaproxy = spread(await pingRtts(lab.transport, CLIENT, haproxy.privateIp, 10));
  const haproxyToPrimary = spread(await pingRtts(lab.transport, haproxy.name, plan.nodes.find((n) => n.name === leader)?.privateIp as string, 10));
  const pathRttMs = Math.round((clientToHaproxy.medianMs + haproxyToPrimary.medianMs) * 1000) / 1000;
  const replicas = postgresNodes(plan).filter((n) => n.name !== leader);
  const nearest = [...replicas].sort((a, b) => configuredRttMs(plan, regionOf(leader), a.region) - configuredRttMs(plan, regionOf(leader), b.region))[0];
  const syncIp = plan.nodes.find((n) => n.name === syncStandby)?.privateIp as string;
  const ping = spread(await pingRtts(lab.transport, leader, syncIp, 20));
  await sqlViaHaproxy(lab, `create table if not exists ${COMMIT_TABLE} (id bigint generated always as identity primary key, at timestamptz not null default clock_timestamp())`);
  const settings = (await sqlViaHaproxy(lab, "select current_setting('synchronous_commit') || '|' || current_setting('synchronous_standby_names')")).split("|");
  const script = "/tmp/wan-commit.sql";
  fs.writeFileSync(clientPath(lab, script), `insert into ${COMMIT_TABLE} default values;\n`);
  const commit = await pgbench(lab, { clients: 1, seconds, mode: "sync", script });
  const expectedMs = ping.medianMs + pathRttMs;
  const toleranceMs = 0.1 * expectedMs + 2;
  return {
    primary: leader,
    syncStandby,
    haproxy: haproxy.name,
    pathRttMs,
    primaryToSyncConfiguredMs: configuredRttMs(plan, regionOf(leader), regionOf(syncStandby)),
    primaryToSyncPing: ping,
    nearestReplica: nearest?.name ?? "",
    nearestReplicaRttMs: nearest ? configuredRttMs(plan, regionOf(leader), nearest.region) : NaN,
    expectedMs: Math.round(expectedMs * 100) / 100,
    toleranceMs: Math.round(toleranceMs * 100) / 100,
    commit,
    ok: commit.latency.n > 0 && commit.latency.medianMs >= ping.medianMs - 0.5,
    withinModel: commit.latency.n > 0 && Math.abs(commit.latency.medianMs - expectedMs) <= toleranceMs,
    syncSettings: { synchronousCommit: settings[0] ?? "", synchronousStandbyNames: settings[1] ?? "" },
  };
}

/** pgbench's tables (scale 1) through HAProxy, once. */
export async function pgbenchInit(lab: LabContext): Promise<number> {
  const t = Date.now();
  const result = await lab.transport.run(CLIENT, [PGBENCH, "-i", "-q", "-s", "1", conninfo(lab)], { env: { PGPASSWORD: lab.access.superuserPassword }, timeoutMs: 300_000 });
  if (result.code !== 0) throw new Error(`pgbench -i failed: ${(result.stderr || result.stdout).trim().slice(-800)}`);
  return (Date.now() - t) / 1000;
}

/** Sync and async commit at each client count, interleaved (sync then async per count). */
export async function syncVsAsync(lab: LabContext, clients: number[], seconds: number, progress: (line: string) => void = () => undefined): Promise<PgbenchResult[]> {
  const out: PgbenchResult[] = [];
  for (const c of clients) {
    for (const mode of ["sync", "async"] as const) {
      progress(`pgbench ${mode} ${c} client(s), ${seconds} s`);
      out.push(await pgbench(lab, { clients: c, seconds, mode }));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// etcd stability

interface EtcdMemberSnapshot {
  member: string;
  node: string;
  raftTerm?: number;
  leader?: string;
  memberId?: string;
  metrics: Record<string, number>;
  /** etcd's own peer RTT histogram: mean seconds per peer id (sum/count). */
  peerRtt: Record<string, { sum: number; count: number }>;
  logLength: number;
  error?: string;
}

const METRICS = [
  "etcd_server_leader_changes_seen_total",
  "etcd_server_heartbeat_send_failures_total",
  "etcd_server_slow_apply_total",
  "etcd_server_proposals_failed_total",
  "etcd_server_slow_read_indexes_total",
  "etcd_server_proposals_committed_total",
];

async function etcdEnv(access: ClusterAccess, node: string): Promise<{ env: Record<string, string>; owner: string }> {
  const env = parseEnvironmentFile(await access.transport.readFile(node, NODE_PATHS.etcdctlEnv));
  const owner = access.plan.certificates.find((c) => c.node === node && c.certPath === env.ETCDCTL_CERT)?.owner ?? "root";
  return { env, owner };
}

async function snapshotMember(lab: LabContext, member: { name: string; node: string; clientUrl: string }): Promise<EtcdMemberSnapshot> {
  const snap: EtcdMemberSnapshot = { member: member.name, node: member.node, metrics: {}, peerRtt: {}, logLength: 0 };
  snap.logLength = (await lab.transport.unitLog(member.node, "etcd.service").catch(() => "")).length;
  try {
    const { env, owner } = await etcdEnv(lab.access, member.node);
    const rest = { ...env };
    delete rest.ETCDCTL_ENDPOINTS;
    const status = await lab.transport.run(member.node, ["etcdctl", `--endpoints=${member.clientUrl}`, "endpoint", "status", "-w", "json", "--command-timeout=3s"], {
      user: owner,
      env: rest,
      timeoutMs: 15_000,
    });
    snap.raftTerm = Number(/"raft_term":(\d+)/.exec(status.stdout)?.[1] ?? NaN);
    snap.leader = /"leader":(\d+)/.exec(status.stdout)?.[1];
    snap.memberId = /"member_id":(\d+)/.exec(status.stdout)?.[1];
    const metrics = await lab.transport.run(
      member.node,
      ["curl", "-sS", "-m", "5", "--cacert", env.ETCDCTL_CACERT ?? "", "--cert", env.ETCDCTL_CERT ?? "", "--key", env.ETCDCTL_KEY ?? "", `${member.clientUrl}/metrics`],
      { user: owner, timeoutMs: 15_000 },
    );
    for (const line of metrics.stdout.split("\n")) {
      const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line.trim());
      if (!m) continue;
      const [, name, labels, value] = m as unknown as [string, string, string | undefined, string];
      if (METRICS.includes(name) && !labels) snap.metrics[name] = Number(value);
      if (name === "etcd_network_peer_round_trip_time_seconds_sum" || name === "etcd_network_peer_round_trip_time_seconds_count") {
        const peer = /To="([^"]+)"/.exec(labels ?? "")?.[1] ?? "?";
        const entry = (snap.peerRtt[peer] ??= { sum: 0, count: 0 });
        if (name.endsWith("_sum")) entry.sum = Number(value);
        else entry.count = Number(value);
      }
    }
    if (metrics.code !== 0) snap.error = `metrics: ${metrics.stderr.trim()}`;
  } catch (error) {
    snap.error = (error as Error).message;
  }
  return snap;
}

const ETCD_LOG_EVENTS: [string, RegExp][] = [
  ["elected leader", /elected leader/],
  ["lost leader", /lost leader/],
  ["became candidate", /became (pre-)?candidate/],
  ["heartbeat not sent on time", /failed to send out heartbeat on time/],
  ["apply request took too long", /apply request took too long/],
  ["slow fdatasync", /slow fdatasync/],
  ["prober detected unhealthy", /prober detected unhealthy status/],
];

async function etcdLogEvents(lab: LabContext, node: string, from: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let text: string;
  try {
    text = (await lab.transport.unitLog(node, "etcd.service")).slice(from);
  } catch {
    return counts;
  }
  for (const line of text.split("\n")) {
    for (const [label, re] of ETCD_LOG_EVENTS) if (re.test(line)) counts[label] = (counts[label] ?? 0) + 1;
  }
  return counts;
}

export interface EtcdStability {
  seconds: number;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  load: string[];
  members: {
    member: string;
    raftTermStart?: number;
    raftTermEnd?: number;
    leaderStart?: string;
    leaderEnd?: string;
    leaderChangesSeen: number;
    heartbeatSendFailures: number;
    slowApplies: number;
    proposalsFailed: number;
    proposalsCommitted: number;
    /**
     * Mean of etcd's own peer probe (etcd_network_peer_round_trip_time_seconds) over the window, ms,
     * per peer member id. The prober opens a new TLS connection per probe, so this is ≈ 2× the network RTT.
     */
    peerRttMs: Record<string, number>;
    logEvents: Record<string, number>;
    error?: string;
  }[];
  patroni: { leaderStart?: string; leaderEnd?: string; leadersSeen: string[]; timelineStart?: number; timelineEnd?: number };
  etcdPuts: { ok: number; failed: number };
  /** No raft term change, no leader change seen, one Patroni leader throughout. */
  ok: boolean;
  problems: string[];
}

/** A steady etcd write load: one `etcdctl put` every 500 ms from `node`, for `seconds`. */
function etcdPutLoop(lab: LabContext, node: string, env: Record<string, string>, owner: string, seconds: number): RunningCommand {
  const script = `end=$(( $(date +%s) + ${Math.ceil(seconds)} )); i=0; while [ "$(date +%s)" -lt "$end" ]; do if etcdctl put /pgha-lab/wan-load "$i" >/dev/null 2>&1; then echo ok; else echo fail; fi; i=$((i+1)); sleep 0.5; done`;
  return lab.transport.spawn(node, ["sh", "-c", script], { user: owner, env });
}

/**
 * Watches etcd and Patroni for `seconds` under a steady write load: `work`
 * first (the other measurements), then — for whatever time is left —
 * rate-limited pgbench (4 clients, 40 tps, simple-update) through HAProxy;
 * an `etcdctl put` every 500 ms throughout (on top of Patroni's own writes).
 */
export async function etcdStability(lab: LabContext, seconds: number, work?: () => Promise<void>, progress: (line: string) => void = () => undefined): Promise<EtcdStability> {
  const plan: ClusterPlan = lab.plan;
  const members = plan.etcd.members;
  const started = Date.now();
  const deadline = started + seconds * 1000;
  const start = await Promise.all(members.map((m) => snapshotMember(lab, m)));
  const viewStart = await clusterView(lab.access);
  const leaderStart = leaderOf(viewStart.members);
  const leadersSeen = new Set<string>(leaderStart ? [leaderStart.name] : []);
  const load: string[] = ["Patroni's own etcd writes (every member, every loop_wait)", "etcdctl put every 500 ms"];
  const putNode = members[0]?.node;
  const { env, owner } = await etcdEnv(lab.access, putNode);
  const puts = etcdPutLoop(lab, putNode, env, owner, seconds);
  const putCounts = { ok: 0, failed: 0 };
  puts.onLine((line) => {
    if (line.trim() === "ok") putCounts.ok++;
    else if (line.trim() === "fail") putCounts.failed++;
  });
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      try {
        const leader = leaderOf((await clusterView(lab.access)).members);
        if (leader) leadersSeen.add(leader.name);
      } catch {
        // next round
      }
      await sleep(5000);
    }
  })();
  try {
    if (work) {
      load.push("the commit-latency and sync/async pgbench runs");
      await work();
    }
    const left = () => Math.floor((deadline - Date.now()) / 1000);
    if (left() >= 5) {
      load.push(`pgbench simple-update, 4 clients rate-limited to 40 tps, for the remaining ${left()} s`);
      if ((await sqlViaHaproxy(lab, "select to_regclass('pgbench_branches') is null")) === "t") {
        progress("pgbench -i -s 1");
        await pgbenchInit(lab);
      }
      const seconds = left();
      progress(`steady load: pgbench 4 clients at 40 tps for ${seconds} s`);
      await pgbench(lab, { clients: 4, seconds, mode: "sync", rate: 40 });
    }
    while (Date.now() < deadline) await sleep(Math.min(1000, deadline - Date.now()));
  } finally {
    watching = false;
    await watcher;
    await puts.stop();
  }
  const end = await Promise.all(members.map((m) => snapshotMember(lab, m)));
  const viewEnd = await clusterView(lab.access);
  const leaderEnd = leaderOf(viewEnd.members);
  if (leaderEnd) leadersSeen.add(leaderEnd.name);
  const problems: string[] = [];
  const logEvents = await Promise.all(members.map((m, i) => etcdLogEvents(lab, m.node, start[i]?.logLength ?? 0)));
  const rows = members.map((m, i) => {
    const a = start[i];
    const b = end[i];
    const delta = (name: string): number => (b.metrics[name] ?? 0) - (a.metrics[name] ?? 0);
    const peerRttMs: Record<string, number> = {};
    for (const [peer, e] of Object.entries(b.peerRtt)) {
      const s = a.peerRtt[peer] ?? { sum: 0, count: 0 };
      if (e.count > s.count) peerRttMs[peer] = Math.round(((e.sum - s.sum) / (e.count - s.count)) * 1e5) / 100;
    }
    const row = {
      member: m.name,
      raftTermStart: a.raftTerm,
      raftTermEnd: b.raftTerm,
      leaderStart: a.leader,
      leaderEnd: b.leader,
      leaderChangesSeen: delta("etcd_server_leader_changes_seen_total"),
      heartbeatSendFailures: delta("etcd_server_heartbeat_send_failures_total"),
      slowApplies: delta("etcd_server_slow_apply_total"),
      proposalsFailed: delta("etcd_server_proposals_failed_total"),
      proposalsCommitted: delta("etcd_server_proposals_committed_total"),
      peerRttMs,
      logEvents: logEvents[i] ?? {},
      error: a.error ?? b.error,
    };
    if (row.error) problems.push(`${m.name}: ${row.error}`);
    if (row.raftTermStart !== row.raftTermEnd) problems.push(`${m.name}: raft term ${row.raftTermStart} → ${row.raftTermEnd}`);
    if (row.leaderStart !== row.leaderEnd) problems.push(`${m.name}: raft leader ${row.leaderStart} → ${row.leaderEnd}`);
    if (row.leaderChangesSeen > 0) problems.push(`${m.name}: ${row.leaderChangesSeen} leader change(s) seen`);
    return row;
  });
  if (leadersSeen.size !== 1) problems.push(`Patroni leaders seen: ${[...leadersSeen].join(", ") || "none"}`);
  if (putCounts.failed) problems.push(`${putCounts.failed} etcdctl put(s) failed`);
  return {
    seconds: Math.round((Date.now() - started) / 100) / 10,
    heartbeatIntervalMs: plan.etcd.timing.heartbeatIntervalMs,
    electionTimeoutMs: plan.etcd.timing.electionTimeoutMs,
    load,
    members: rows,
    patroni: { leaderStart: leaderStart?.name, leaderEnd: leaderEnd?.name, leadersSeen: [...leadersSeen], timelineStart: leaderStart?.timeline, timelineEnd: leaderEnd?.timeline },
    etcdPuts: putCounts,
    ok: problems.length === 0,
    problems,
  };
}

export interface WanMeasurements {
  at: string;
  commitLatency: CommitLatency;
  pgbenchInitSeconds: number;
  syncVsAsync: PgbenchResult[];
  etcd: EtcdStability;
}

/**
 * Puts the primary in the client's region, as an application would be
 * deployed: otherwise every statement, not only the commit, crosses the WAN
 * (a Singapore primary behind Seoul's HAProxy made pgbench's five-statement
 * transaction cost five 72 ms round trips) and sync vs async compares noise.
 * Returns the node moved to, or undefined when it already led.
 */
export async function placePrimaryNearClient(lab: LabContext, progress: (line: string) => void): Promise<string | undefined> {
  const target = postgresNodes(lab.plan).find((n) => n.region === clientRegion(lab.layout));
  if (!target) return undefined;
  const before = (await quickHealth(lab.access)).topology.leader;
  if (before === target.name) return undefined;
  progress(`moving the primary ${before ?? "?"} → ${target.name} (the client's region)`);
  await moveLeaderTo(drillContext(lab, progress, path.join(lab.layout.stateDir, "drills.log")), target.name);
  return target.name;
}

/** All of point 3 except the drills: commit latency and sync/async inside one etcd stability window. */
export async function measureWan(
  lab: LabContext,
  options: { steadySeconds: number; pgbenchSeconds: number; clients?: number[]; progress?: (line: string) => void },
): Promise<WanMeasurements> {
  const progress = options.progress ?? (() => undefined);
  // Before the window: a switchover is a leader change of Patroni's, not of etcd's, but keep the window clean.
  await placePrimaryNearClient(lab, progress);
  let commit: CommitLatency | undefined;
  let initSeconds = 0;
  let matrix: PgbenchResult[] = [];
  const etcd = await etcdStability(
    lab,
    options.steadySeconds,
    async () => {
      progress(`single-client commit latency (${options.pgbenchSeconds} s)`);
      commit = await commitLatency(lab, options.pgbenchSeconds);
      progress("pgbench -i -s 1");
      initSeconds = await pgbenchInit(lab);
      matrix = await syncVsAsync(lab, options.clients ?? [1, 8, 32], options.pgbenchSeconds, progress);
    },
    progress,
  );
  if (!commit) throw new Error("internal: commit latency not measured");
  return { at: new Date().toISOString(), commitLatency: commit, pgbenchInitSeconds: initSeconds, syncVsAsync: matrix, etcd };
}

/** Markdown for docs/lab.md and the report. */
export function measurementsMarkdown(m: WanMeasurements): string {
  return [commitMarkdown(m.commitLatency), "", matrixMarkdown(m.syncVsAsync), "", etcdMarkdown(m.etcd)].join("\n");
}

export function commitMarkdown(c: CommitLatency): string {
  return [
    `Single-client commit latency through ${c.haproxy}:5000 (primary ${c.primary}, sync standby ${c.syncStandby}; nearest replica ${c.nearestReplica} at ${c.nearestReplicaRttMs} ms):`,
    `median ${c.commit.latency.medianMs.toFixed(2)} ms (p10 ${c.commit.latency.p10Ms.toFixed(2)}, p90 ${c.commit.latency.p90Ms.toFixed(2)}, max ${c.commit.latency.maxMs.toFixed(2)}, n ${c.commit.latency.n}); model ${c.expectedMs} ms ± ${c.toleranceMs} (ping primary→sync median ${c.primaryToSyncPing.medianMs} ms + client→HAProxy→primary ${c.pathRttMs} ms): ${c.withinModel ? "within" : "outside"} the model; ${c.ok ? "waits for the sync standby (≥ its RTT): ok" : "FASTER than the sync standby's RTT: FAIL"}`,
  ].join("\n");
}

export function matrixMarkdown(rows: PgbenchResult[]): string {
  const lines = ["| clients | mode | tps | latency median ms | p90 ms | max ms | transactions |", "|---:|---|---:|---:|---:|---:|---:|"];
  for (const r of rows)
    lines.push(
      `| ${r.clients} | ${r.mode} | ${r.tps.toFixed(1)} | ${r.latency.medianMs.toFixed(2)} | ${r.latency.p90Ms.toFixed(2)} | ${r.latency.maxMs.toFixed(2)} | ${r.transactions} |`,
    );
  return lines.join("\n");
}

export function etcdMarkdown(e: EtcdStability): string {
  const lines: string[] = [];
  lines.push(
    `etcd (heartbeat ${e.heartbeatIntervalMs} ms, election ${e.electionTimeoutMs} ms) over ${e.seconds} s: ${e.ok ? "no leader change" : `PROBLEMS: ${e.problems.join("; ")}`}`,
  );
  lines.push("");
  lines.push(
    "| member | raft term start→end | leader changes | heartbeat send failures | slow applies | proposals committed | etcd peer probe ms (new TLS connection each: ≈ 2 RTT over the WAN) | log events |",
  );
  lines.push("|---|---|---:|---:|---:|---:|---|---|");
  for (const r of e.members) {
    const events =
      Object.entries(r.logEvents)
        .map(([k, v]) => `${k}: ${v}`)
        .join(", ") || "none";
    lines.push(
      `| ${r.member} | ${r.raftTermStart}→${r.raftTermEnd} | ${r.leaderChangesSeen} | ${r.heartbeatSendFailures} | ${r.slowApplies} | ${r.proposalsCommitted} | ${Object.values(r.peerRttMs).join(", ")} | ${events} |`,
    );
  }
  lines.push(
    `Patroni leader ${e.patroni.leaderStart} → ${e.patroni.leaderEnd} (seen: ${e.patroni.leadersSeen.join(", ")}), timeline ${e.patroni.timelineStart} → ${e.patroni.timelineEnd}; etcdctl puts ${e.etcdPuts.ok} ok, ${e.etcdPuts.failed} failed. Load: ${e.load.join("; ")}.`,
  );
  return lines.join("\n");
}
