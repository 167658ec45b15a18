import { findNode, nodesWithRole, type NodePlan } from "../plan";
import { dataMountPoint } from "../cloud-init/node-files";
import { clearEnvCache, clusterView, etcdEndpoints, leaderOf, observers, patronictl, postgresNodes, sqlOnNode, type ClusterAccess } from "../checks/cluster";
import { monotonicSeconds, sleep } from "./exec";
import type { NodeTransport } from "../checks/transport";
import type { FaultInjector } from "./transport";
import { judgeTopology, type Topology } from "../checks/readiness";
import { quickHealth } from "./verify";
import { alertFiringOn, AlertWatch, connectedPrometheus } from "./alert-watch";
import { ALERT_NAMES } from "../cloud-init/alert-rules";
import { analyseWrites, ensureWritesTable, missingAcks, splitBrainAcks, Writer, type WriteAnalysis, type WriteRecord } from "./writer";

/**
 * The failover drills. Each runs with the application writer going through
 * HAProxy's primary port from the client namespace, injects one fault,
 * measures RTO (gap between the last acknowledged write before the fault and
 * the first after it), RPO (acknowledged commits missing on the primary
 * afterwards) and split brain (acknowledgements from the old primary after
 * the new one acknowledged), then restores a healthy baseline.
 */

export interface DrillOutcome {
  drill: string;
  repetition: number;
  ok: boolean;
  problems: string[];
  rtoSeconds?: number;
  rpoMissing: number;
  splitBrainAcks: number;
  acked: number;
  unknownOutcome: number;
  unsafeAcks: number;
  maxGapAfterSeconds: number;
  oldPrimary?: string;
  newPrimary?: string;
  /** Time from the end of the fault to a healthy baseline again. */
  restoreSeconds?: number;
  /** The writes over time, for the drill report's chart (lab/report.ts). */
  timeline?: WriteTimeline;
  /** Who led and who followed before the fault and once the drill was judged. */
  topology?: { before?: TopologySnapshot; after?: TopologySnapshot };
  details: Record<string, unknown>;
}

/** A topology as the report shows it (node names). */
export interface TopologySnapshot {
  leader?: string;
  syncStandby?: string;
  replicas: string[];
}

/** An instant of a drill on its timeline, in seconds from the timeline's start. */
export interface TimelineMark {
  label: "fault" | "promotion" | "recovered";
  atSeconds: number;
}

/**
 * The writer's records bucketed per `bucketMs` from the first record: how
 * many writes were acknowledged and how many failed in each bucket.
 */
export interface WriteTimeline {
  bucketMs: number;
  acks: number[];
  errors: number[];
  marks: TimelineMark[];
}

export interface DrillContext {
  access: ClusterAccess;
  transport: NodeTransport;
  faults: FaultInjector;
  /** Phase updates for the live table. */
  progress: (phase: string) => void;
  log: (line: string) => void;
  /** Log file text of a service on a node (Patroni log for pg_rewind evidence); undefined when unavailable. */
  serviceLog?: (node: string, unit: string) => Promise<string | undefined>;
}

export interface DrillDefinition {
  id: string;
  title: string;
  /** False for a drill with no writer through the primary port: it has no RTO. */
  measuresRto?: boolean;
  run(ctx: DrillContext, repetition: number): Promise<DrillOutcome>;
}

export const FAILOVER_BUDGET_MS = 90_000;
/** Longest write gap that still counts as "no stall" (drill 4): see its use. */
export const STALL_LIMIT_SECONDS = 5;
export const HEALTH_BUDGET_MS = 150_000;
export const AFTER_RECOVERY_MS = 3_000;

export function ipOf(ctx: DrillContext, node: string): string {
  return findNode(ctx.access.plan, node).privateIp;
}

function nodeOfIp(ctx: DrillContext, ip: string | undefined): string | undefined {
  return ctx.access.plan.nodes.find((n) => n.privateIp === ip)?.name;
}

/** The HAProxy the writer uses: the first one outside `avoidRegion`. */
export function writerHaproxy(ctx: DrillContext, avoidRegion?: string): NodePlan {
  const candidates = nodesWithRole(ctx.access.plan, "haproxy").filter((n) => n.region !== avoidRegion && !ctx.access.isolated.has(n.name));
  const chosen = candidates[0];
  if (!chosen) throw new Error("no connected HAProxy for the writer");
  return chosen;
}

/** Polls until `probe` yields a value; returns undefined after the budget. */
export async function poll<T>(timeoutMs: number, probe: () => Promise<T | undefined>, intervalMs = 500): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // keep polling
    }
    if (Date.now() > deadline) return undefined;
    await sleep(intervalMs);
  }
}

/** Waits for a healthy baseline: every member streaming, exactly one sync standby, every service up. */
export async function waitBaseline(ctx: DrillContext, timeoutMs = HEALTH_BUDGET_MS): Promise<Topology> {
  const { access } = ctx;
  let last = "";
  const topology = await poll(
    timeoutMs,
    async () => {
      const health = await quickHealth(access);
      last = health.detail;
      if (!health.ok) return undefined;
      const endpoints = await etcdEndpoints(access, observers(access)[0]);
      const bad = endpoints.filter((e) => !e.healthy);
      if (bad.length) {
        last = `etcd unhealthy: ${bad.map((e) => e.member).join(", ")}`;
        return undefined;
      }
      return health.topology;
    },
    1000,
  );
  if (!topology) throw new Error(`cluster not back to a healthy baseline within ${timeoutMs / 1000} s: ${last}`);
  lastBaseline.set(ctx, topology);
  return topology;
}

/** The baseline each context last waited for: the report's "before". */
const lastBaseline = new WeakMap<DrillContext, Topology>();

/** The topology as the reachable members see it now (no waiting): the report's "after". */
async function topologyNow(ctx: DrillContext, leaderHint: string): Promise<TopologySnapshot | undefined> {
  try {
    const view = await clusterView(ctx.access, leaderHint);
    return snapshot(
      judgeTopology(
        view.members,
        postgresNodes(ctx.access.plan).map((n) => n.name),
      ),
    );
  } catch {
    return undefined;
  }
}

/** Reconnects anything cut and starts any stopped service, then waits for the baseline. */
export async function restoreBaseline(ctx: DrillContext): Promise<Topology> {
  const { access } = ctx;
  if (access.isolated.size) {
    const nodes = [...access.isolated];
    await ctx.faults.reconnect(nodes);
    nodes.forEach((n) => access.isolated.delete(n));
  }
  const healed = await ctx.faults.healAll();
  if (healed.length) ctx.log(`reconnected ${healed.join(", ")} (left cut by an earlier run)`);
  for (const node of access.plan.nodes) {
    const units = [node.roles.has("etcd") ? "etcd.service" : "", node.roles.has("postgres") ? "patroni.service" : "", node.roles.has("haproxy") ? "haproxy.service" : ""].filter(
      Boolean,
    );
    for (const unit of units) if (!(await ctx.transport.serviceActive(node.name, unit))) await ctx.transport.startService(node.name, unit);
  }
  return waitBaseline(ctx);
}

/** Patroni 4 vocabulary: --leader/--candidate (never --master). */
export async function switchover(ctx: DrillContext, leader: string, candidate: string): Promise<void> {
  const observer = observers(ctx.access, candidate)[0];
  const result = await patronictl(ctx.access, observer, ["switchover", "--leader", leader, "--candidate", candidate, "--force"], 90_000);
  if (result.code !== 0) throw new Error(`patronictl switchover --leader ${leader} --candidate ${candidate} failed: ${(result.stderr || result.stdout).trim()}`);
}

async function setSyncNodeCount(ctx: DrillContext, count: number): Promise<void> {
  const observer = observers(ctx.access)[0];
  const result = await patronictl(ctx.access, observer, ["edit-config", "--set", `synchronous_node_count=${count}`, "--force"]);
  if (result.code !== 0) throw new Error(`patronictl edit-config synchronous_node_count=${count} failed: ${(result.stderr || result.stdout).trim()}`);
}

/**
 * Makes `target` the leader. In synchronous mode Patroni only switches over
 * to a sync standby; when the target is an asynchronous replica, both
 * replicas are made synchronous for the move and the count restored after.
 */
export async function moveLeaderTo(ctx: DrillContext, target: string): Promise<Topology> {
  let topology = await waitBaseline(ctx);
  if (topology.leader === target) return topology;
  const configured = ctx.access.plan.config.patroni.synchronousNodeCount;
  if (topology.syncStandby !== target) {
    ctx.progress(`making ${target} synchronous`);
    await setSyncNodeCount(ctx, postgresNodes(ctx.access.plan).length - 1);
    const ready = await poll(60_000, async () => {
      const view = await clusterView(ctx.access);
      return view.members.some((m) => m.name === target && m.role === "sync_standby" && m.state === "streaming") ? true : undefined;
    });
    if (!ready) throw new Error(`${target} did not become a sync standby`);
  }
  ctx.progress(`switchover to ${target}`);
  await switchover(ctx, topology.leader as string, target);
  if (topology.syncStandby !== target) await setSyncNodeCount(ctx, configured);
  topology = await waitBaseline(ctx);
  if (topology.leader !== target) throw new Error(`switchover to ${target} left ${topology.leader} as leader`);
  return topology;
}

/** Restores the baseline after a drill, recording the time or the failure in the outcome. */
export async function restoreInto(ctx: DrillContext, result: DrillOutcome, before?: () => Promise<void>): Promise<void> {
  ctx.progress("restoring baseline");
  const t = Date.now();
  try {
    if (before) await before();
    await restoreBaseline(ctx);
    result.restoreSeconds = (Date.now() - t) / 1000;
  } catch (error) {
    result.problems.push(`restore: ${(error as Error).message}`);
  }
}

export function outcome(drill: string, repetition: number): DrillOutcome {
  return { drill, repetition, ok: false, problems: [], rpoMissing: 0, splitBrainAcks: 0, acked: 0, unknownOutcome: 0, unsafeAcks: 0, maxGapAfterSeconds: 0, details: {} };
}

export const TIMELINE_BUCKET_MS = 100;
const OUTAGE_MARK_MIN_SECONDS = 1;

/**
 * The report's timeline: acknowledged and failed writes per 100 ms, with the
 * fault, the first write acknowledged by the new primary (when the primary
 * changed) and the first acknowledged write after the outage.
 */
export function writeTimeline(records: WriteRecord[], instant: number, analysis: WriteAnalysis, newPrimaryIp?: string): WriteTimeline {
  const writes = records.filter((r) => r.ok !== undefined);
  const start = Math.min(instant, ...writes.map((r) => r.t));
  const end = Math.max(instant, ...writes.map((r) => r.t));
  const buckets = Math.floor(((end - start) * 1000) / TIMELINE_BUCKET_MS) + 1;
  const acks = new Array<number>(buckets).fill(0);
  const errors = new Array<number>(buckets).fill(0);
  for (const r of writes) (r.ok ? acks : errors)[Math.floor(((r.t - start) * 1000) / TIMELINE_BUCKET_MS)]++;
  const at = (t: number): number => Number((t - start).toFixed(3));
  const marks: TimelineMark[] = [{ label: "fault", atSeconds: at(instant) }];
  const promotion = newPrimaryIp ? writes.find((r) => r.ok && r.t >= instant && r.server === newPrimaryIp) : undefined;
  if (promotion) marks.push({ label: "promotion", atSeconds: at(promotion.t) });
  // The end of the outage: the acknowledgement that closes the longest gap after the fault.
  const after = writes.filter((r) => r.ok && r.t >= (analysis.lastBefore?.t ?? instant));
  let recovered: WriteRecord | undefined;
  let longest = -1;
  for (let i = 1; i < after.length; i++) {
    const gap = after[i].t - after[i - 1].t;
    if (gap > longest) [longest, recovered] = [gap, after[i]];
  }
  // A drill whose writes never stopped (etcd member loss) has no outage to mark: gaps under a second are the writer's pace.
  if (recovered && longest > OUTAGE_MARK_MIN_SECONDS) marks.push({ label: "recovered", atSeconds: at(recovered.t) });
  return { bucketMs: TIMELINE_BUCKET_MS, acks, errors, marks };
}

function snapshot(topology: Topology): TopologySnapshot {
  return { leader: topology.leader, syncStandby: topology.syncStandby, replicas: topology.replicas };
}

/** Fills the write-derived figures and the invariant checks shared by all drills. */
export async function judgeWrites(
  ctx: DrillContext,
  result: DrillOutcome,
  writer: Writer,
  instant: number,
  oldPrimary: string | undefined,
  primaryNow: string,
): Promise<WriteAnalysis> {
  const analysis = analyseWrites(writer.records, instant);
  result.timeline = writeTimeline(writer.records, instant, analysis, oldPrimary !== primaryNow ? ipOf(ctx, primaryNow) : undefined);
  const before = lastBaseline.get(ctx);
  result.topology = { before: before && snapshot(before), after: await topologyNow(ctx, primaryNow) };
  result.acked = analysis.acked;
  result.unknownOutcome = analysis.unknown;
  result.unsafeAcks = analysis.unsafe;
  result.rtoSeconds = analysis.rtoSeconds;
  result.maxGapAfterSeconds = analysis.maxGapAfterSeconds;
  result.details.firstGapSeconds = analysis.firstGapSeconds;
  result.details.servers = analysis.servers.map((ip) => nodeOfIp(ctx, ip) ?? ip);
  if (analysis.rtoSeconds === undefined) result.problems.push("no acknowledged write after the fault");
  const missing = await missingAcks(ctx.access, primaryNow, writer);
  result.rpoMissing = missing.length;
  if (missing.length) result.problems.push(`RPO: ${missing.length} acknowledged commits missing on ${primaryNow} (seq ${missing.slice(0, 10).join(", ")})`);
  if (oldPrimary && oldPrimary !== primaryNow) {
    const split = splitBrainAcks(writer.records, ipOf(ctx, oldPrimary), instant);
    result.splitBrainAcks = split.length;
    if (split.length) result.problems.push(`split brain: ${split.length} writes acknowledged by ${oldPrimary} after ${primaryNow} took over`);
  }
  if (analysis.unsafe) result.problems.push(`${analysis.unsafe} commits acknowledged with a cancelled synchronous-replication wait`);
  return analysis;
}

/** Runs body with a writer through HAProxy's primary port; always stops the writer. */
export async function withWriter<T>(ctx: DrillContext, drill: string, repetition: number, haproxy: NodePlan, body: (writer: Writer) => Promise<T>): Promise<T> {
  const run = `${drill}-${repetition}-${Date.now()}`;
  const writer = Writer.start(ctx.access, { host: haproxy.privateIp, port: ctx.access.plan.config.haproxy.primaryPort }, run);
  try {
    ctx.progress(`writer warming up via ${haproxy.name}`);
    await writer.warmUp(20);
    return await body(writer);
  } finally {
    await writer.stop();
  }
}

/**
 * Waits for an acknowledged write after `instant` that satisfies `accept`.
 * With `onConnectionFrom`, only a write on a connection opened at or after
 * that instant counts: an INSERT already in flight when a server is killed
 * can be acknowledged a moment later, which is not a recovery.
 */
export async function waitRecovery(
  ctx: DrillContext,
  writer: Writer,
  instant: number,
  accept: (server: string | undefined) => boolean,
  what: string,
  onConnectionFrom?: number,
): Promise<boolean> {
  const started = Date.now();
  const timer = setInterval(() => {
    ctx.progress(`${what}: ${((Date.now() - started) / 1000).toFixed(0)} s, ${writer.acks().length} acks`);
  }, 1000);
  const firstCounted = (records: WriteRecord[]): number => (onConnectionFrom === undefined ? 0 : records.findIndex((r) => r.event === "connected" && r.t >= onConnectionFrom));
  try {
    return await writer.waitUntil((records) => {
      const from = firstCounted(records);
      return from >= 0 && records.slice(from).some((r) => r.ok && r.t >= instant && accept(r.server));
    }, FAILOVER_BUDGET_MS);
  } finally {
    clearInterval(timer);
  }
}

export async function leaderNow(ctx: DrillContext, timeoutMs = 30_000): Promise<string> {
  const leader = await poll(timeoutMs, async () => leaderOf((await clusterView(ctx.access)).members)?.name);
  if (!leader) throw new Error("no single running leader");
  return leader;
}

/** Length of a node's Patroni log now, so later evidence is read from this point on. */
async function logMark(ctx: DrillContext, node: string): Promise<number> {
  return (await ctx.serviceLog?.(node, "patroni.service"))?.length ?? 0;
}

/** What the old primary's Patroni log says about pg_rewind since `mark`. */
async function rewindEvidence(ctx: DrillContext, node: string, mark: number): Promise<{ verdict: string; lines: string[] }> {
  const text = await ctx.serviceLog?.(node, "patroni.service");
  if (text === undefined) return { verdict: "unknown", lines: [] };
  const lines = text
    .slice(mark)
    .split("\n")
    .filter((l) => /rewind|reinitializ|timeline=|removing data directory/i.test(l))
    .map((l) => l.slice(0, 200));
  const all = lines.join("\n");
  let verdict = "no rewind needed";
  if (/running pg_rewind/i.test(all)) verdict = /pg_rewind exit code=0|rewind.*successful/i.test(all) || !/fail/i.test(all) ? "pg_rewind ran" : "pg_rewind ran and failed";
  if (/Failed to rewind|removing data directory|reinitializ/i.test(all)) verdict += " (data directory re-cloned)";
  return { verdict, lines: lines.slice(0, 8) };
}

/** How long an alert may take to clear once the drill has restored a healthy cluster: a few evaluations, generously. */
const ALERT_CLEAR_BUDGET_MS = 60_000;

/**
 * The alert the fault calls for must fire while the fault lasts. Called once
 * the writes have recovered; it allows three more evaluations for the
 * scrape, the evaluation and the poll to catch up with a fault that healed
 * quickly, never "eventually".
 */
async function judgeAlertFired(ctx: DrillContext, result: DrillOutcome, watch: AlertWatch): Promise<void> {
  const grace = Date.now() + 3 * ctx.access.plan.config.monitoring.scrapeIntervalSeconds * 1000;
  while (watch.trace.firedAfterSeconds === undefined && Date.now() < grace) await sleep(500);
  await watch.stop();
  result.details.alert = watch.trace;
  if (watch.trace.firedAfterSeconds === undefined) result.problems.push(`alert ${watch.trace.alert} did not fire during the fault (${watch.trace.errors[0] ?? "no poll error"})`);
}

/** …and must clear once the cluster is healthy again. */
async function judgeAlertCleared(result: DrillOutcome, watch: AlertWatch): Promise<void> {
  if (!(await watch.cleared(ALERT_CLEAR_BUDGET_MS)))
    result.problems.push(`alert ${watch.trace.alert} still firing ${ALERT_CLEAR_BUDGET_MS / 1000} s after the cluster was healthy again`);
  result.details.alert = watch.trace;
}

/** What a primary's PostgreSQL answers once it no longer accepts writes: read-only, stopping, starting, or gone. */
const FENCED_ANSWER = /shutting down|starting up|not yet accepting|No such file|Connection refused|could not connect/i;

/**
 * Watches a cut primary from inside its own machine (its local socket, which
 * no network cut reaches) until it stops acting as a primary: PostgreSQL in
 * recovery or refusing connections. With failsafe mode on, an isolated
 * primary must still demote: it reaches neither etcd nor any member it would
 * ask. `fenced` resolves to the seconds from `instant`, or undefined if it still
 * acts as a primary when the budget runs out.
 */
function watchFencing(ctx: DrillContext, node: string, instant: number): { fenced: Promise<number | undefined>; lastAnswer(): string } {
  let fencedAt: number | undefined;
  let last = "none yet";
  const deadline = Date.now() + FAILOVER_BUDGET_MS;
  const fenced = (async () => {
    while (fencedAt === undefined && Date.now() < deadline) {
      try {
        const rows = await sqlOnNode(ctx.access, node, "select pg_is_in_recovery()", 5000);
        last = `pg_is_in_recovery() = ${rows[0]?.[0] ?? "?"}`;
        if (rows[0]?.[0] === "t") fencedAt = monotonicSeconds();
      } catch (error) {
        last = (error as Error).message.split("\n")[0] ?? "";
        if (FENCED_ANSWER.test((error as Error).message)) fencedAt = monotonicSeconds();
      }
      if (fencedAt === undefined) await sleep(250);
    }
    return fencedAt === undefined ? undefined : fencedAt - instant;
  })();
  return { fenced, lastAnswer: () => last };
}

/** A host-loss style drill: cut `victims`, expect writes to resume on another member. */
async function lossDrill(
  ctx: DrillContext,
  id: string,
  repetition: number,
  options: { victims: (t: Topology) => string[]; writerAvoidRegion?: string; rejoin?: boolean; alert?: string },
): Promise<DrillOutcome> {
  const result = outcome(id, repetition);
  const baseline = await waitBaseline(ctx);
  const oldPrimary = baseline.leader as string;
  result.oldPrimary = oldPrimary;
  const victims = options.victims(baseline);
  // Host loss has a slow tail when the lost host also led etcd's raft (docs/failover-timing.md): record which it was.
  const etcdLeader = (await etcdEndpoints(ctx.access, oldPrimary).catch(() => [])).find((e) => e.isLeader)?.member;
  result.details.etcdLeaderBefore = etcdLeader;
  result.details.etcdLeaderLost = etcdLeader !== undefined && victims.includes(ctx.access.plan.etcd.members.find((m) => m.name === etcdLeader)?.node ?? "");
  const haproxy = writerHaproxy(ctx, options.writerAvoidRegion);
  const mark = await logMark(ctx, oldPrimary);
  let watch: AlertWatch | undefined;
  await withWriter(ctx, id, repetition, haproxy, async (writer) => {
    ctx.progress(`cutting ${victims.join(", ")}`);
    const instant = monotonicSeconds();
    await ctx.faults.isolate(victims);
    victims.forEach((v) => ctx.access.isolated.add(v));
    const fencing = victims.includes(oldPrimary) ? watchFencing(ctx, oldPrimary, instant) : undefined;
    if (options.alert) watch = new AlertWatch(ctx.access, options.alert, instant);
    const recovered = await waitRecovery(ctx, writer, instant, (server) => server !== ipOf(ctx, oldPrimary), "waiting for a new primary");
    if (!recovered) result.problems.push(`no write acknowledged by a new primary within ${FAILOVER_BUDGET_MS / 1000} s`);
    if (fencing) {
      // The reverse of failsafe mode (drill 15): a primary cut off from etcd and from every member stops acting as one.
      const fencedAfter = await fencing.fenced;
      result.details.oldPrimaryFencedAfterSeconds = fencedAfter;
      const firstNew = writer.records.find((r) => r.ok && r.t >= instant && r.server !== ipOf(ctx, oldPrimary));
      if (firstNew) result.details.newPrimaryFirstAckAfterSeconds = firstNew.t - instant;
      if (fencedAfter === undefined)
        result.problems.push(`${oldPrimary}, cut off, still acted as a primary ${FAILOVER_BUDGET_MS / 1000} s after the cut (last answer: ${fencing.lastAnswer()})`);
    }
    if (watch) await judgeAlertFired(ctx, result, watch);
    const newPrimary = await leaderNow(ctx).catch(() => undefined);
    result.newPrimary = newPrimary;
    if (newPrimary && newPrimary !== baseline.syncStandby) result.problems.push(`promoted ${newPrimary}, which was not the sync standby ${baseline.syncStandby}`);
    await sleep(AFTER_RECOVERY_MS);
    let rejoinInstant: number | undefined;
    if (options.rejoin) {
      // Drill 6: the old primary comes back while the writer keeps going.
      ctx.progress(`reconnecting ${victims.join(", ")}`);
      rejoinInstant = monotonicSeconds();
      await ctx.faults.reconnect(victims);
      victims.forEach((v) => ctx.access.isolated.delete(v));
      const t = Date.now();
      const rejoined = await poll(
        HEALTH_BUDGET_MS,
        async () => {
          const view = await clusterView(ctx.access, newPrimary);
          const topo = judgeTopology(
            view.members,
            postgresNodes(ctx.access.plan).map((n) => n.name),
          );
          const old = view.members.find((m) => m.name === oldPrimary);
          return old?.state === "streaming" && topo.problems.length === 0 ? topo : undefined;
        },
        500,
      );
      result.details.rejoinSeconds = (Date.now() - t) / 1000;
      if (!rejoined) result.problems.push(`${oldPrimary} did not rejoin as a streaming replica within ${HEALTH_BUDGET_MS / 1000} s`);
      else result.details.topologyAfterRejoin = { leader: rejoined.leader, syncStandby: rejoined.syncStandby, replicas: rejoined.replicas };
      result.details.rewind = await rewindEvidence(ctx, oldPrimary, mark);
      await sleep(AFTER_RECOVERY_MS);
    }
    const primaryNow = newPrimary ?? (await leaderNow(ctx));
    await writer.stop();
    const analysis = await judgeWrites(ctx, result, writer, instant, oldPrimary, primaryNow);
    if (rejoinInstant !== undefined) {
      // RTO of the rejoin itself: the writes must not notice it.
      const rejoinAnalysis = analyseWrites(writer.records, rejoinInstant);
      result.details.failoverRtoSeconds = analysis.rtoSeconds;
      result.rtoSeconds = rejoinAnalysis.rtoSeconds;
      result.maxGapAfterSeconds = rejoinAnalysis.maxGapAfterSeconds;
    }
  });
  await restoreInto(ctx, result);
  if (watch) await judgeAlertCleared(result, watch);
  if (!options.rejoin) result.details.rewind = await rewindEvidence(ctx, oldPrimary, mark);
  result.ok = result.problems.length === 0;
  return result;
}

/**
 * The data volume's mount against Patroni's start in the node's current boot
 * (both in µs of CLOCK_MONOTONIC, so they compare within one boot).
 */
async function mountBeforePatroni(ctx: DrillContext, node: string): Promise<{ ok: boolean; detail: string }> {
  const show = async (argv: string[]): Promise<string> => {
    const result = await ctx.transport.run(node, argv);
    if (result.code !== 0) throw new Error(`${node}: ${argv.join(" ")}: ${result.stderr.trim()}`);
    return result.stdout.trim();
  };
  // The unit name as pgha-prepare-data-volume wrote it: systemd's own escaping of the mount point.
  const unit = await show(["systemd-escape", "--path", "--suffix=mount", dataMountPoint(ctx.access.plan)]);
  const mounted = Number(await show(["systemctl", "show", "--property=ActiveEnterTimestampMonotonic", "--value", unit]));
  const started = Number(await show(["systemctl", "show", "--property=ExecMainStartTimestampMonotonic", "--value", "patroni.service"]));
  const source = await show(["findmnt", "--noheadings", "--output=SOURCE", dataMountPoint(ctx.access.plan)]).catch(() => "");
  const detail = `${unit} active at ${(mounted / 1e6).toFixed(2)} s, patroni started at ${(started / 1e6).toFixed(2)} s (CLOCK_MONOTONIC), source ${source || "none"}`;
  return { ok: mounted > 0 && started > 0 && mounted <= started && source !== "", detail };
}

/** Failed units of a node (what makes `is-system-running` say degraded). */
async function failedUnits(ctx: DrillContext, node: string): Promise<string[]> {
  const result = await ctx.transport.run(node, ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--output=cat"]).catch(() => undefined);
  return (result?.stdout ?? "")
    .split("\n")
    .map((line) => line.trim().split(/\s+/)[0] ?? "")
    .filter(Boolean);
}

/** Reboots one node and waits for its boot to end; problems (a degraded boot, the mount after Patroni) go to `result`. */
async function rebootAndCheck(ctx: DrillContext, node: NodePlan, result: DrillOutcome): Promise<Record<string, unknown>> {
  const t = Date.now();
  ctx.progress(`rebooting ${node.name}`);
  await ctx.faults.reboot(node.name);
  const state = await ctx.faults.waitBooted(node.name);
  const step: Record<string, unknown> = { node: node.name, bootSeconds: (Date.now() - t) / 1000, systemState: state };
  if (state !== "running") result.problems.push(`${node.name}: boot ended ${state} (failed: ${(await failedUnits(ctx, node.name)).join(", ") || "?"})`);
  if (node.roles.has("postgres")) {
    // Patroni waits for its mount (RequiresMountsFor=); give it the time to start before reading its timestamp.
    await poll(60_000, async () => ((await ctx.transport.serviceActive(node.name, "patroni.service")) ? true : undefined));
    const order = await mountBeforePatroni(ctx, node.name);
    step.mount = order.detail;
    if (!order.ok) result.problems.push(`${node.name}: the data volume was not mounted before Patroni started (${order.detail})`);
  }
  return step;
}

/** Drill e: the primary's machine reboots (a clean shutdown); the sync standby takes over and the old primary rejoins. */
async function primaryRebootDrill(ctx: DrillContext, repetition: number): Promise<DrillOutcome> {
  const id = "primary-reboot";
  const result = outcome(id, repetition);
  const baseline = await waitBaseline(ctx);
  const oldPrimary = baseline.leader as string;
  result.oldPrimary = oldPrimary;
  await withWriter(ctx, id, repetition, writerHaproxy(ctx), async (writer) => {
    const instant = monotonicSeconds();
    result.details.reboot = await rebootAndCheck(ctx, findNode(ctx.access.plan, oldPrimary), result);
    const recovered = await waitRecovery(ctx, writer, instant, (server) => server !== ipOf(ctx, oldPrimary), "waiting for a new primary");
    if (!recovered) result.problems.push(`no write acknowledged by a new primary within ${FAILOVER_BUDGET_MS / 1000} s`);
    const newPrimary = await leaderNow(ctx);
    result.newPrimary = newPrimary;
    if (newPrimary !== baseline.syncStandby) result.problems.push(`promoted ${newPrimary}, which was not the sync standby ${baseline.syncStandby}`);
    ctx.progress(`waiting for ${oldPrimary} to rejoin`);
    const t = Date.now();
    const rejoined = await poll(HEALTH_BUDGET_MS, async () => {
      const view = await clusterView(ctx.access, newPrimary);
      return view.members.some((m) => m.name === oldPrimary && m.state === "streaming") ? true : undefined;
    });
    result.details.rejoinSeconds = (Date.now() - t) / 1000;
    if (!rejoined) result.problems.push(`${oldPrimary} did not rejoin as a streaming replica within ${HEALTH_BUDGET_MS / 1000} s`);
    await sleep(AFTER_RECOVERY_MS);
    await writer.stop();
    await judgeWrites(ctx, result, writer, instant, oldPrimary, newPrimary);
  });
  await restoreInto(ctx, result);
  result.ok = result.problems.length === 0;
  return result;
}

/**
 * Drill d: every node rebooted, one at a time (the primary last, as an OS
 * rollout goes), each with a writer through an HAProxy other than the node.
 * Each node must boot cleanly, mount its volume before Patroni and rejoin;
 * RPO 0 and no split brain over every step.
 */
export const ROLLING_REBOOT: DrillDefinition = {
  id: "rolling-reboot",
  title: "every node rebooted, one at a time, with writes through HAProxy: the volume mounted before Patroni, each node rejoins, RPO 0",
  run: async (ctx, repetition) => {
    const id = "rolling-reboot";
    const result = outcome(id, repetition);
    const baseline = await waitBaseline(ctx);
    result.oldPrimary = baseline.leader;
    const nodes = ctx.access.plan.nodes;
    const order = [...nodes.filter((n) => n.name !== baseline.leader), ...nodes.filter((n) => n.name === baseline.leader)];
    const steps: Record<string, unknown>[] = [];
    const rtos: number[] = [];
    for (const node of order) {
      const haproxy = nodesWithRole(ctx.access.plan, "haproxy").find((n) => n.name !== node.name);
      if (!haproxy) throw new Error("no HAProxy besides the rebooted node");
      const primaryBefore = await leaderNow(ctx);
      const stepResult = outcome(id, repetition);
      await withWriter(ctx, id, repetition, haproxy, async (writer) => {
        const instant = monotonicSeconds();
        const step = await rebootAndCheck(ctx, node, stepResult);
        const t = Date.now();
        ctx.progress(`waiting for ${node.name} to rejoin`);
        await waitBaseline(ctx);
        step.rejoinSeconds = (Date.now() - t) / 1000;
        step.writerVia = haproxy.name;
        await sleep(AFTER_RECOVERY_MS);
        const primaryNow = await leaderNow(ctx);
        await writer.stop();
        await judgeWrites(ctx, stepResult, writer, instant, primaryBefore, primaryNow);
        step.rtoSeconds = stepResult.rtoSeconds;
        step.acked = stepResult.acked;
        steps.push(step);
      });
      result.problems.push(...stepResult.problems.map((p) => `${node.name}: ${p}`));
      result.rpoMissing += stepResult.rpoMissing;
      result.splitBrainAcks += stepResult.splitBrainAcks;
      result.acked += stepResult.acked;
      result.unknownOutcome += stepResult.unknownOutcome;
      result.unsafeAcks += stepResult.unsafeAcks;
      result.maxGapAfterSeconds = Math.max(result.maxGapAfterSeconds, stepResult.maxGapAfterSeconds);
      if (stepResult.rtoSeconds !== undefined) rtos.push(stepResult.rtoSeconds);
      ctx.log(`rolling reboot: ${node.name} back (${JSON.stringify(steps.at(-1))})`);
    }
    result.details.steps = steps;
    // The drill's RTO is its worst step's (the primary's reboot, a failover).
    result.rtoSeconds = rtos.length === order.length ? Math.max(...rtos) : undefined;
    result.newPrimary = await leaderNow(ctx);
    await restoreInto(ctx, result);
    result.ok = result.problems.length === 0;
    return result;
  },
};

/**
 * The drill 9 bound on the write stall of a cut primary ↔ sync standby link.
 * PostgreSQL's default wal_sender_timeout (60 s) stalled every write for 60.4 s
 * (issue #15); with the rendered 5 s the stall is wal_sender_timeout plus up
 * to one Patroni loop. 30 s holds on a loaded 2-core machine and still tells
 * the two apart.
 */
const LINK_CUT_STALL_LIMIT_SECONDS = 30;

/**
 * The sync standby lost to the primary, by its host's loss (drill 5) or by
 * the cut of only their link (drill 9): commits wait until the primary's
 * walsender gives up on it and Patroni names the other replica; the primary
 * stays, nothing acknowledged is lost. Drill 5 then takes the other replica
 * too, and "sync standby missing" must page.
 */
async function syncStandbyLostDrill(ctx: DrillContext, id: string, repetition: number, fault: "host" | "path"): Promise<DrillOutcome> {
  const result = outcome(id, repetition);
  const baseline = await waitBaseline(ctx);
  const oldPrimary = baseline.leader as string;
  const sync = baseline.syncStandby as string;
  const other = baseline.replicas[0];
  result.oldPrimary = oldPrimary;
  result.details.lostSyncStandby = sync;
  let watch: AlertWatch | undefined;
  await withWriter(ctx, id, repetition, writerHaproxy(ctx), async (writer) => {
    ctx.progress(fault === "host" ? `cutting sync standby ${sync}` : `cutting the path ${oldPrimary} ↔ ${sync}`);
    const instant = monotonicSeconds();
    if (fault === "host") {
      await ctx.faults.isolate([sync]);
      ctx.access.isolated.add(sync);
    } else {
      await ctx.faults.cutPath(oldPrimary, sync);
    }
    const recovered = await waitRecovery(ctx, writer, instant, () => true, "waiting for writes to resume");
    if (!recovered) result.problems.push(`writes did not resume within ${FAILOVER_BUDGET_MS / 1000} s`);
    const t = Date.now();
    const moved = await poll(FAILOVER_BUDGET_MS, async () => {
      const view = await clusterView(ctx.access, oldPrimary);
      return view.members.some((m) => m.name === other && m.role === "sync_standby") ? view : undefined;
    });
    result.details.syncMovedAfterSeconds = (Date.now() - t) / 1000;
    if (!moved) result.problems.push(`the sync role did not move to ${other}`);
    else result.details.newSyncStandby = other;
    if (fault === "host" && other) {
      // The sync role moves within seconds now (wal_sender_timeout 5 s), too soon for "sync standby missing" to
      // fire, and rightly: that page is for a primary left without any standby. So the replacement goes too: its
      // Patroni (and with it PostgreSQL) stops, its etcd member stays (two hosts cut would take etcd's quorum), the
      // primary goes on alone (strict mode off) and the alert must fire while that lasts.
      // Not firing before: a page seen below is this fault's, not a leftover of the first (which may fire briefly).
      const server = connectedPrometheus(ctx.access);
      if (!server) throw new Error("no connected HAProxy node to ask Prometheus");
      const quiet = await poll(ALERT_CLEAR_BUDGET_MS, async () => ((await alertFiringOn(ctx.access, server, ALERT_NAMES.syncStandbyMissing)) ? undefined : true), 1000);
      if (!quiet) result.problems.push(`${ALERT_NAMES.syncStandbyMissing} still firing ${ALERT_CLEAR_BUDGET_MS / 1000} s after ${other} became the sync standby`);
      ctx.progress(`stopping Patroni on ${other} too: the primary alone`);
      const second = monotonicSeconds();
      await ctx.transport.stopService(other, "patroni.service");
      watch = new AlertWatch(ctx.access, ALERT_NAMES.syncStandbyMissing, second);
      const alone = await waitRecovery(ctx, writer, second, () => true, "waiting for the primary to go on alone");
      if (!alone) result.problems.push(`writes did not resume with no standby left within ${FAILOVER_BUDGET_MS / 1000} s`);
      // The fault holds until the alert fires (or a minute passes): no race with a recovery.
      await poll(60_000, async () => (watch?.trace.firedAfterSeconds !== undefined ? true : undefined), 500);
      await judgeAlertFired(ctx, result, watch);
    }
    await sleep(AFTER_RECOVERY_MS);
    const primaryNow = await leaderNow(ctx);
    result.newPrimary = primaryNow;
    if (primaryNow !== oldPrimary) result.problems.push(`the primary changed (${oldPrimary} → ${primaryNow})`);
    await writer.stop();
    await judgeWrites(ctx, result, writer, instant, oldPrimary, primaryNow);
    if (fault === "path" && (result.rtoSeconds ?? Infinity) > LINK_CUT_STALL_LIMIT_SECONDS)
      result.problems.push(
        `writes stalled ${String(result.rtoSeconds)} s after the link cut (limit ${LINK_CUT_STALL_LIMIT_SECONDS} s: wal_sender_timeout did not end the walsender)`,
      );
  });
  await restoreInto(ctx, result, fault === "path" ? () => ctx.faults.restorePath(oldPrimary, sync) : undefined);
  if (watch) await judgeAlertCleared(result, watch);
  result.ok = result.problems.length === 0;
  return result;
}

export const DRILLS: DrillDefinition[] = [
  {
    id: "primary-host-loss",
    title: "hard loss of the primary's host (links cut, processes keep running)",
    run: (ctx, repetition) => lossDrill(ctx, "primary-host-loss", repetition, { victims: (t) => [t.leader as string], alert: ALERT_NAMES.noLeader }),
  },
  {
    id: "primary-kill-9",
    title: "kill -9 of Patroni and PostgreSQL on the primary",
    run: async (ctx, repetition) => {
      const id = "primary-kill-9";
      const result = outcome(id, repetition);
      const baseline = await waitBaseline(ctx);
      const oldPrimary = baseline.leader as string;
      result.oldPrimary = oldPrimary;
      await withWriter(ctx, id, repetition, writerHaproxy(ctx), async (writer) => {
        ctx.progress(`kill -9 patroni+postgres on ${oldPrimary}`);
        const instant = monotonicSeconds();
        const killed = (await ctx.transport.signalProcesses(oldPrimary, "patroni", "SIGKILL")) + (await ctx.transport.signalProcesses(oldPrimary, "postgres", "SIGKILL"));
        result.details.killedProcesses = killed;
        if (killed === 0) result.problems.push("found no Patroni/PostgreSQL process to kill");
        const recovered = await waitRecovery(ctx, writer, instant, () => true, "waiting for writes to resume", monotonicSeconds());
        if (!recovered) result.problems.push(`no write acknowledged within ${FAILOVER_BUDGET_MS / 1000} s`);
        await sleep(AFTER_RECOVERY_MS);
        const primaryNow = await leaderNow(ctx);
        result.newPrimary = primaryNow;
        result.details.failover = primaryNow !== oldPrimary ? "failover" : "recovered in place (systemd restarted Patroni, which kept the leader lock)";
        await writer.stop();
        await judgeWrites(ctx, result, writer, instant, oldPrimary, primaryNow);
      });
      await restoreInto(ctx, result);
      result.ok = result.problems.length === 0;
      return result;
    },
  },
  {
    id: "planned-switchover",
    title: "planned switchover (patronictl switchover --leader X --candidate Y --force)",
    run: async (ctx, repetition) => {
      const id = "planned-switchover";
      const result = outcome(id, repetition);
      const baseline = await waitBaseline(ctx);
      const oldPrimary = baseline.leader as string;
      const candidate = baseline.syncStandby as string;
      result.oldPrimary = oldPrimary;
      await withWriter(ctx, id, repetition, writerHaproxy(ctx), async (writer) => {
        ctx.progress(`switchover ${oldPrimary} → ${candidate}`);
        const instant = monotonicSeconds();
        await switchover(ctx, oldPrimary, candidate);
        const recovered = await waitRecovery(ctx, writer, instant, (server) => server === ipOf(ctx, candidate), `waiting for writes on ${candidate}`);
        if (!recovered) result.problems.push(`no write acknowledged by ${candidate} within ${FAILOVER_BUDGET_MS / 1000} s`);
        await sleep(AFTER_RECOVERY_MS);
        const primaryNow = await leaderNow(ctx);
        result.newPrimary = primaryNow;
        if (primaryNow !== candidate) result.problems.push(`leader is ${primaryNow}, expected ${candidate}`);
        await writer.stop();
        await judgeWrites(ctx, result, writer, instant, oldPrimary, primaryNow);
      });
      await restoreInto(ctx, result);
      result.ok = result.problems.length === 0;
      return result;
    },
  },
  {
    id: "etcd-member-loss",
    title: "loss of one etcd member (the raft leader, stopped); quorum holds, writes continue",
    run: async (ctx, repetition) => {
      const id = "etcd-member-loss";
      const result = outcome(id, repetition);
      const baseline = await waitBaseline(ctx);
      const oldPrimary = baseline.leader as string;
      result.oldPrimary = oldPrimary;
      const endpoints = await etcdEndpoints(ctx.access, oldPrimary);
      const victim = ctx.access.plan.etcd.members.find((m) => m.name === endpoints.find((e) => e.isLeader)?.member) ?? ctx.access.plan.etcd.members[0];
      if (!victim) throw new Error("no etcd member");
      result.details.stoppedMember = victim.name;
      let watch: AlertWatch | undefined;
      await withWriter(ctx, id, repetition, writerHaproxy(ctx), async (writer) => {
        ctx.progress(`stopping etcd on ${victim.node}`);
        const instant = monotonicSeconds();
        await ctx.transport.stopService(victim.node, "etcd.service");
        watch = new AlertWatch(ctx.access, ALERT_NAMES.etcdMemberDown, instant);
        // Long enough for the leader key to need several refreshes through the remaining quorum.
        const ttlMs = ctx.access.plan.config.patroni.ttl * 1000;
        const window = Date.now() + ttlMs;
        while (Date.now() < window) {
          ctx.progress(`etcd ${victim.name} down: ${Math.round((window - Date.now()) / 1000)} s left, ${writer.acks().length} acks`);
          await sleep(1000);
        }
        const remaining = (
          await etcdEndpoints(ctx.access, observers(ctx.access, victim.node === oldPrimary ? undefined : oldPrimary).find((n) => n !== victim.node) ?? oldPrimary)
        ).filter((e) => e.member !== victim.name);
        await judgeAlertFired(ctx, result, watch);
        result.details.quorum = remaining.map((e) => `${e.member}:${e.healthy ? "healthy" : "unhealthy"}${e.isLeader ? " (leader)" : ""}`);
        if (remaining.some((e) => !e.healthy)) result.problems.push("remaining etcd members not healthy");
        if (!remaining.some((e) => e.isLeader)) result.problems.push("no raft leader among the remaining members");
        const primaryNow = await leaderNow(ctx);
        result.newPrimary = primaryNow;
        if (primaryNow !== oldPrimary) result.problems.push(`the primary changed (${oldPrimary} → ${primaryNow}) although etcd kept quorum`);
        await writer.stop();
        await judgeWrites(ctx, result, writer, instant, oldPrimary, primaryNow);
        // Measured gaps here are ≈ 0.1 s. A stall the etcd loss caused would be Patroni demoting the primary
        // (≥ ttl) or PostgreSQL waiting for it; 5 s (ttl / 4) still catches that, while a writer descheduled
        // for a moment on a loaded 2-core machine does not fail the drill.
        if (result.maxGapAfterSeconds > STALL_LIMIT_SECONDS)
          result.problems.push(`writes stalled for ${result.maxGapAfterSeconds.toFixed(1)} s while etcd had quorum (limit ${STALL_LIMIT_SECONDS} s)`);
      });
      await restoreInto(ctx, result, () => ctx.transport.startService(victim.node, "etcd.service"));
      if (watch) await judgeAlertCleared(result, watch);
      result.ok = result.problems.length === 0;
      return result;
    },
  },
  {
    id: "sync-standby-loss",
    title: "loss of the sync standby (sync role moves to the other replica), then of that one (the primary goes on alone, strict mode off, and pages)",
    run: (ctx, repetition) => syncStandbyLostDrill(ctx, "sync-standby-loss", repetition, "host"),
  },
  {
    id: "old-primary-rejoin",
    title: "the old primary rejoins as a replica (pg_rewind); back to exactly one sync standby",
    run: (ctx, repetition) => lossDrill(ctx, "old-primary-rejoin", repetition, { victims: (t) => [t.leader as string], rejoin: true }),
  },
  {
    id: "region-loss",
    title: "loss of a whole region (its database node and its HAProxy), measured through another region's HAProxy",
    run: async (ctx, repetition) => {
      const region = ctx.access.plan.regions.find((r) => r.nodes.some((n) => n.roles.has("postgres")));
      if (!region) throw new Error("no region with a postgres node");
      const target = region.nodes.find((n) => n.roles.has("postgres")) as NodePlan;
      ctx.progress(`moving the primary to ${target.name}`);
      await moveLeaderTo(ctx, target.name);
      clearEnvCache();
      return lossDrill(ctx, "region-loss", repetition, { victims: () => region.nodes.map((n) => n.name), writerAvoidRegion: region.name });
    },
  },
  {
    id: "primary-reboot",
    title: "reboot of the primary's machine (systemctl reboot): writes resume on the sync standby, the old primary rejoins after its volume mounts",
    run: primaryRebootDrill,
  },
  {
    id: "sync-link-cut",
    title: "cut of only the primary ↔ sync standby link (both still reach the third region): the sync role moves, writes stall briefly",
    run: (ctx, repetition) => syncStandbyLostDrill(ctx, "sync-link-cut", repetition, "path"),
  },
];

/** Drills by id or number in `list` (the CLI passes the failover drills and the backup drills after them). */
export function selectDrills(names: string[], list: DrillDefinition[] = DRILLS): DrillDefinition[] {
  if (names.length === 0) return list;
  return names.map((name) => {
    const byNumber = /^\d+$/.test(name) ? list[Number(name) - 1] : undefined;
    const found = byNumber ?? list.find((d) => d.id === name);
    if (!found) throw new Error(`unknown drill ${JSON.stringify(name)}; drills: ${list.map((d, i) => `${i + 1}=${d.id}`).join(", ")}`);
    return found;
  });
}

export interface DrillSummary {
  id: string;
  title: string;
  repetitions: DrillOutcome[];
  rto: { medianSeconds?: number; maxSeconds?: number };
  ok: boolean;
}

export function median(values: number[]): number | undefined {
  if (!values.length) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function summarise(definition: DrillDefinition, outcomes: DrillOutcome[]): DrillSummary {
  const rtos = outcomes.map((o) => o.rtoSeconds).filter((v): v is number => v !== undefined);
  return {
    id: definition.id,
    title: definition.title,
    repetitions: outcomes,
    rto: { medianSeconds: median(rtos), maxSeconds: rtos.length ? Math.max(...rtos) : undefined },
    ok: outcomes.length > 0 && outcomes.every((o) => o.ok),
  };
}

/** Makes sure the writes table exists (on the current leader). */
export async function prepareDrills(ctx: DrillContext): Promise<void> {
  const topology = await waitBaseline(ctx);
  await ensureWritesTable(ctx.access, topology.leader as string);
}
