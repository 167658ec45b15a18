import { certificateFor, NODE_PATHS, nodesWithRole, PORTS, type ClusterPlan } from "../plan";
import { PATH_MTU_UNIT } from "../cloud-init/systemd";
import { clusterView, observers, patroniRest, patronictl, sqlOnNode, type ClusterAccess } from "../checks/cluster";
import { verifyReadiness, type Check, type Verification } from "../checks/readiness";
import { dynamicConfigPatch, dynamicSettings, patchedParameters, sameSetting, type DynamicSettings } from "./dynamic-config";
import { changedFiles, desiredFiles, FILE_STATE_SCRIPT, parseFileStates, restartsPostgres, WRITE_FILE_SCRIPT, type DesiredFile, type FileEffect } from "./node-files";
import { FILE_SERIAL_SCRIPT, fetchSecretsArgv, parseSecretFetchReport, SERVED_SERIAL_SCRIPT, serialOf, secretWork, type SecretFileWork } from "./node-secrets";

/**
 * Rolling day-2 changes, one node at a time, each step gated by the
 * readiness checks (checks/readiness.ts), through any NodeTransport:
 *
 * 1. the cluster must be ready before anything is touched;
 * 2. Patroni's dynamic settings that differ from the plan are patched in one
 *    `patronictl edit-config --apply -` (Patroni spreads them to every member;
 *    parameters that need a restart show up as pending_restart);
 * 3. nodes with work — changed node-local files, secret files that differ
 *    from the parameter store (renewed certificates), a pending restart — are
 *    done in {@link rolloutOrder}: asynchronous replicas, sync standbys,
 *    nodes without PostgreSQL, and the leader last; before anything that
 *    restarts PostgreSQL on the leader, a switchover to an up-to-date sync
 *    standby;
 * 4. after every step the checks must pass again (bounded), or the rollout
 *    stops naming the failing check and node;
 * 5. at the end: no node with work left, Patroni's configuration equal to
 *    the plan's, and every check passing with the plan's own settings.
 *
 * The order is decided by the pure {@link nextStep}; the driver only observes
 * and acts.
 */

// ---------------------------------------------------------------------------
// Pure: what to do next
// ---------------------------------------------------------------------------

/** What one node still needs. */
export interface NodeWork {
  node: string;
  /** Rendered files that differ from the node's. */
  files: DesiredFile[];
  /** Secret files (certificates, keys) the node's `pgha-fetch-secrets --check` reports as differing: paths only. */
  secrets: SecretFileWork[];
  /** PostgreSQL runs with a setting that only a restart applies. */
  pendingRestart: boolean;
}

export function hasWork(work: NodeWork | undefined): work is NodeWork {
  return !!work && (work.files.length > 0 || work.secrets.length > 0 || work.pendingRestart);
}

/** Every effect the node's work needs, rendered files and secret files alike. */
export function workEffects(work: NodeWork): Set<FileEffect> {
  return new Set([...work.files, ...work.secrets].map((f) => f.effect));
}

/** Work that restarts PostgreSQL on the node (never done to a primary in place). */
export function isDisruptive(work: NodeWork): boolean {
  return work.pendingRestart || [...workEffects(work)].some(restartsPostgres);
}

export function describeWork(work: NodeWork): string {
  const parts = [...work.files.map((f) => `${f.path} (${f.effect})`), ...work.secrets.map((f) => `secret ${f.path} (${f.effect})`)];
  if (work.pendingRestart) parts.push("pending restart");
  return parts.join(", ") || "nothing";
}

/** The cluster as one observation sees it. */
export interface RolloutView {
  leader?: string;
  syncStandbys: string[];
  /** Asynchronous replicas. */
  replicas: string[];
  /** Nodes without PostgreSQL (HAProxy-only, etcd-only), in plan order. */
  others: string[];
  /** Patroni's synchronous_mode as running: switchovers then only go to a sync standby. */
  synchronousMode: boolean;
  /** Nodes with something left to do. */
  work: Record<string, NodeWork | undefined>;
  healthy: boolean;
  /** The failing checks, when not healthy. */
  healthDetail: string;
}

export interface RolloutProgress {
  /** Steps done per node so far. */
  attempts: Record<string, number>;
  switchovers: number;
}

export interface RolloutLimits {
  /** A node that still has work after this many steps stops the rollout. */
  maxAttemptsPerNode: number;
  /** One switchover moves the leader to a done node; a second would mean the change keeps reappearing. */
  maxSwitchovers: number;
}

export const DEFAULT_LIMITS: RolloutLimits = { maxAttemptsPerNode: 3, maxSwitchovers: 1 };

export type RolloutStep =
  | { kind: "done" }
  | { kind: "stop"; reason: string }
  | { kind: "wait-healthy"; reason: string }
  | { kind: "apply"; node: string; work: NodeWork }
  | { kind: "switchover"; from: string; to: string };

/** Replicas first (asynchronous, then synchronous), then nodes without PostgreSQL, the leader last. */
export function rolloutOrder(view: Pick<RolloutView, "leader" | "syncStandbys" | "replicas" | "others" | "work">): string[] {
  const order = [...view.replicas, ...view.syncStandbys, ...view.others];
  // Nodes with work the topology does not place (a member that is down) still count, before the leader.
  for (const node of Object.keys(view.work)) if (!order.includes(node) && node !== view.leader) order.push(node);
  if (view.leader) order.push(view.leader);
  return [...new Set(order)];
}

/**
 * The next step of a rolling change:
 * - `done` when no node has work;
 * - `stop` when any node's secret work is one the rollout does not rotate
 *   (the CA, a password), before anything is touched;
 * - `stop` when a node still has work after `maxAttemptsPerNode` steps, or the
 *   leader needs a restart and no done sync standby can take over, or a second
 *   switchover would be needed;
 * - `wait-healthy` while any readiness check fails (the driver bounds it);
 * - `apply` on the first node with work in {@link rolloutOrder}, the leader
 *   only when nothing else is left and its work does not restart PostgreSQL;
 * - `switchover` away from the leader when its work would restart
 *   PostgreSQL, to the first sync standby (any replica outside synchronous
 *   mode) that has no work left.
 */
export function nextStep(view: RolloutView, progress: RolloutProgress, limits: RolloutLimits = DEFAULT_LIMITS): RolloutStep {
  const pending = rolloutOrder(view).filter((node) => hasWork(view.work[node]));
  if (pending.length === 0) return { kind: "done" };
  const unrolled = pending.flatMap((node) => (view.work[node] as NodeWork).secrets.filter((f) => f.effect === "not-rolled").map((f) => `${node}: ${f.path}`));
  if (unrolled.length) {
    return {
      kind: "stop",
      reason: `secrets the rollout does not rotate differ from the parameter store (a new CA or password needs the manual procedure): ${unrolled.join(", ")}`,
    };
  }
  for (const node of pending) {
    if ((progress.attempts[node] ?? 0) >= limits.maxAttemptsPerNode) {
      return { kind: "stop", reason: `${node} still needs ${describeWork(view.work[node] as NodeWork)} after ${progress.attempts[node]} attempts` };
    }
  }
  if (!view.healthy) return { kind: "wait-healthy", reason: view.healthDetail || "not healthy" };
  if (!view.leader) return { kind: "wait-healthy", reason: "no leader" };
  const next = pending.find((node) => node !== view.leader);
  if (next) return { kind: "apply", node: next, work: view.work[next] as NodeWork };
  const leaderWork = view.work[view.leader] as NodeWork;
  if (!isDisruptive(leaderWork)) return { kind: "apply", node: view.leader, work: leaderWork };
  if (progress.switchovers >= limits.maxSwitchovers) {
    return { kind: "stop", reason: `leader ${view.leader} needs ${describeWork(leaderWork)} after ${progress.switchovers} switchover(s) already` };
  }
  const candidates = view.synchronousMode ? view.syncStandbys : [...view.syncStandbys, ...view.replicas];
  const to = candidates.find((node) => !hasWork(view.work[node]));
  if (!to)
    return {
      kind: "stop",
      reason: `leader ${view.leader} needs ${describeWork(leaderWork)}, but no ${view.synchronousMode ? "sync standby" : "replica"} without pending work can take over`,
    };
  return { kind: "switchover", from: view.leader, to };
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

export interface RolloutContext {
  /** Access to the cluster; `access.plan` is the plan to roll out (the desired one). */
  access: ClusterAccess;
  log: (line: string) => void;
  /** Budget for the cluster to be ready before a step, and for each step to settle (default 5 min). */
  healthBudgetMs?: number;
  /** Delay between observations while waiting (default 5 s). */
  pollMs?: number;
  limits?: RolloutLimits;
  /** Called after each step (the lab records timings around it). */
  onStep?: (step: RolloutStep, atSeconds: number) => void;
}

export interface RolloutRecord {
  atSeconds: number;
  kind: RolloutStep["kind"] | "patch";
  node?: string;
  detail: string;
}

export interface RolloutReport {
  /** The `PATCH /config` that was applied (empty: dynamic settings already matched). */
  patch: Record<string, unknown>;
  steps: RolloutRecord[];
  switchover?: { from: string; to: string };
  seconds: number;
  final: Verification;
}

/** Failing checks in one line each, naming check and node. */
export function failingChecks(verification: Verification): string[] {
  return verification.checks.filter((c: Check) => !c.ok).map((c) => `${c.id}: ${c.detail}`);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Patroni's dynamic configuration as the cluster runs it (GET /config on any connected member). */
export async function liveDynamicConfig(access: ClusterAccess): Promise<Record<string, unknown>> {
  let last = "";
  for (const node of observers(access)) {
    try {
      const reply = await patroniRest(access, node, "/config");
      if (reply.status === 200) return JSON.parse(reply.body) as Record<string, unknown>;
      last = `${node}: HTTP ${reply.status}`;
    } catch (error) {
      last = `${node}: ${(error as Error).message}`;
    }
  }
  throw new Error(`no member answered GET /config (${last})`);
}

/** What the checks should expect from the settings the cluster currently runs with. */
export function expectationsOf(live: Record<string, unknown> | undefined, plan: ClusterPlan): { syncStandbys: number; maxLagBytes: number } {
  const { patroni } = plan.config;
  if (!live) return { syncStandbys: patroni.synchronousMode ? patroni.synchronousNodeCount : 0, maxLagBytes: patroni.maximumLagOnFailover };
  const syncMode = live.synchronous_mode === true || live.synchronous_mode === "on";
  return {
    syncStandbys: syncMode ? Number(live.synchronous_node_count ?? 1) : 0,
    maxLagBytes: Number(live.maximum_lag_on_failover ?? patroni.maximumLagOnFailover),
  };
}

/**
 * The readiness gate: polls the checks until all pass, printing what still
 * fails whenever it changes (and every minute); throws after the budget with
 * every failing check and its node. `live`: judge by the running settings.
 */
export async function waitUntilReady(
  access: ClusterAccess,
  options: { budgetMs: number; pollMs?: number; log: (line: string) => void; live?: boolean; what?: string },
): Promise<Verification> {
  const started = Date.now();
  let lastSummary = "";
  let lastPrinted = 0;
  for (let attempt = 1; ; attempt++) {
    let live: Record<string, unknown> | undefined;
    if (options.live) live = await liveDynamicConfig(access).catch(() => undefined);
    const verification = await verifyReadiness(access, { expect: expectationsOf(live, access.plan) });
    const elapsed = Math.round((Date.now() - started) / 1000);
    if (verification.ok) {
      const t = verification.topology;
      options.log(
        `${options.what ?? "ready"} after ${elapsed} s (${attempt} check round${attempt > 1 ? "s" : ""}): leader ${t.leader}, sync ${t.syncStandbys.join(", ") || "-"}, replicas ${t.replicas.join(", ") || "-"}; ${verification.checks.length} checks pass`,
      );
      return verification;
    }
    const failing = failingChecks(verification);
    const summary = failing.join(" | ");
    if (summary !== lastSummary || Date.now() - lastPrinted > 60_000) {
      options.log(`not ready after ${elapsed} s: ${failing.length} check(s) failing: ${summary}`);
      lastSummary = summary;
      lastPrinted = Date.now();
    }
    if (Date.now() - started > options.budgetMs) {
      throw new Error(`cluster not ready within ${Math.round(options.budgetMs / 1000)} s; failing checks:\n  ${failing.join("\n  ")}`);
    }
    await sleep(options.pollMs ?? 5000);
  }
}

/** The node's files against the plan, in one command per node. */
async function nodeFileWork(access: ClusterAccess, node: string): Promise<DesiredFile[]> {
  const desired = desiredFiles(access.plan, access.plan.nodes.find((n) => n.name === node) as ClusterPlan["nodes"][number]);
  const result = await access.transport.run(node, ["sh", "-c", FILE_STATE_SCRIPT, "pgha-files", ...desired.map((f) => f.path)], { timeoutMs: 30_000 });
  if (result.code !== 0) throw new Error(`${node}: cannot read file states: ${result.stderr.trim()}`);
  return changedFiles(desired, parseFileStates(result.stdout));
}

/**
 * The node's secret files against the parameter store, by `pgha-fetch-secrets
 * --check` on the node (values stay on the node). Skipped while the node's
 * copy of the script itself is about to be replaced: an older one may not
 * know --check; the next observation, after the files step, asks again.
 */
export async function nodeSecretWork(access: ClusterAccess, node: string, files: DesiredFile[]): Promise<SecretFileWork[]> {
  if (!access.secretSource || files.some((f) => f.path === NODE_PATHS.fetchSecrets)) return [];
  const result = await access.transport.run(node, fetchSecretsArgv(access.secretSource.args, true), { timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`${node}: pgha-fetch-secrets --check failed (exit ${result.code}): ${result.stderr.trim().slice(-500)}`);
  return secretWork(access.plan, node, parseSecretFetchReport(result.stdout));
}

/** PostgreSQL's own view: settings changed in the configuration that only a restart applies. */
async function postgresPendingRestart(access: ClusterAccess, node: string): Promise<boolean> {
  const rows = await sqlOnNode(access, node, "select count(*) from pg_settings where pending_restart");
  return Number(rows[0]?.[0] ?? 0) > 0;
}

/** One observation: checks (judged by the running settings), and every node's work. */
export async function observe(access: ClusterAccess): Promise<{ view: RolloutView; verification: Verification; live?: Record<string, unknown> }> {
  const live = await liveDynamicConfig(access).catch(() => undefined);
  const verification = await verifyReadiness(access, { expect: expectationsOf(live, access.plan) });
  const { topology } = verification;
  const postgres = new Set(nodesWithRole(access.plan, "postgres").map((n) => n.name));
  const connected = access.plan.nodes.map((n) => n.name).filter((n) => !access.isolated.has(n));
  const work: Record<string, NodeWork | undefined> = {};
  await Promise.all(
    connected.map(async (node) => {
      const files = await nodeFileWork(access, node);
      const secrets = await nodeSecretWork(access, node, files);
      let pendingRestart = false;
      if (postgres.has(node)) {
        const member = topology.members.find((m) => m.name === node);
        pendingRestart = member?.pendingRestart === true || (await postgresPendingRestart(access, node).catch(() => false));
      }
      const w = { node, files, secrets, pendingRestart };
      if (hasWork(w)) work[node] = w;
    }),
  );
  return {
    verification,
    live,
    view: {
      leader: topology.leader,
      syncStandbys: topology.syncStandbys,
      replicas: topology.replicas,
      others: access.plan.nodes.filter((n) => !postgres.has(n.name)).map((n) => n.name),
      synchronousMode: live ? live.synchronous_mode === true : access.plan.config.patroni.synchronousMode,
      work,
      healthy: verification.ok,
      healthDetail: failingChecks(verification).join(" | "),
    },
  };
}

/**
 * Waits until the node's Patroni REST API serves the certificate on disk.
 * Patroni 4.0 does not look at its REST certificate in a reload that also
 * picked up a changed patroni.yml, and SIGHUPs that arrive within one HA
 * loop coalesce, so after a loop without the new serial it is signalled
 * again (then patroni.yml is unchanged and the certificate check runs).
 */
export async function ensureRestCertificateServed(
  access: ClusterAccess,
  node: string,
  log: (line: string) => void,
  options: { loopMs?: number; pollMs?: number; signals?: number } = {},
): Promise<void> {
  const cert = certificateFor(access.plan.certificates, node, "patroni-rest");
  const ip = access.plan.nodes.find((n) => n.name === node)?.privateIp;
  const loopMs = options.loopMs ?? (access.plan.config.patroni.loopWait + 2) * 1000;
  const serial = async (argv: string[]): Promise<string | undefined> => serialOf((await access.transport.run(node, argv, { timeoutMs: 20_000 })).stdout);
  const want = await serial(["sh", "-c", FILE_SERIAL_SCRIPT, "pgha-serial", cert.certPath]);
  if (!want) throw new Error(`${node}: cannot read the serial of ${cert.certPath}`);
  let served: string | undefined;
  for (let signal = 1; signal <= (options.signals ?? 3); signal++) {
    const deadline = Date.now() + loopMs;
    for (;;) {
      served = await serial(["sh", "-c", SERVED_SERIAL_SCRIPT, "pgha-served", `${ip}:${PORTS.patroniRest}`, NODE_PATHS.caCert, "-cert", cert.certPath, "-key", cert.keyPath]);
      if (served === want) {
        log(`${node}: Patroni REST API serves the new certificate (serial ${want})`);
        return;
      }
      if (Date.now() > deadline) break;
      await sleep(options.pollMs ?? 1000);
    }
    log(`${node}: Patroni REST API still serves ${served ?? "nothing"} after ${signal} reload(s), want ${want}: SIGHUP again`);
    await access.transport.signalProcesses(node, "patroni", "SIGHUP");
  }
  throw new Error(`${node}: Patroni REST API serves ${served ?? "nothing"}, not the certificate on disk (${want})`);
}

async function restartUnit(access: ClusterAccess, node: string, unit: string): Promise<void> {
  await access.transport.stopService(node, unit);
  await access.transport.startService(node, unit);
}

/** One node's work: write its files, fetch its secrets, then make both take effect, then a pending restart. */
export async function applyWork(access: ClusterAccess, work: NodeWork, log: (line: string) => void): Promise<void> {
  const { node } = work;
  const { transport } = access;
  for (const file of work.files) {
    const result = await transport.run(node, ["sh", "-c", WRITE_FILE_SCRIPT, "pgha-write", file.path, file.owner, file.permissions], { input: file.content, timeoutMs: 30_000 });
    if (result.code !== 0) throw new Error(`${node}: writing ${file.path} failed: ${result.stderr.trim()}`);
    log(`${node}: wrote ${file.path} (${file.owner} ${file.permissions})`);
  }
  if (work.secrets.length) {
    if (!access.secretSource) throw new Error(`${node}: secret files differ but the access has no secret source`);
    const result = await transport.run(node, fetchSecretsArgv(access.secretSource.args, false), { timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`${node}: pgha-fetch-secrets failed (exit ${result.code}): ${result.stderr.trim().slice(-500)}`);
    const written = parseSecretFetchReport(result.stdout).changed.map((c) => c.path);
    log(`${node}: pgha-fetch-secrets wrote ${written.join(", ") || "nothing"}`);
  }
  const effects = workEffects(work);
  // Routes first: a restart below may open new connections across regions.
  if (effects.has("restart-path-mtu")) {
    log(`${node}: restarting ${PATH_MTU_UNIT} (inter-region routes)`);
    await restartUnit(access, node, PATH_MTU_UNIT);
  }
  if (effects.has("restart-patroni")) {
    log(`${node}: restarting patroni.service (restarts PostgreSQL)`);
    await restartUnit(access, node, "patroni.service");
  } else if (effects.has("reload-patroni")) {
    const signalled = await transport.signalProcesses(node, "patroni", "SIGHUP");
    log(`${node}: Patroni reloaded (SIGHUP to ${signalled} process${signalled === 1 ? "" : "es"})`);
    if (signalled === 0) throw new Error(`${node}: no Patroni process to reload`);
  }
  const restCert = access.plan.certificates.find((c) => c.node === node && c.kind === "patroni-rest");
  if (!effects.has("restart-patroni") && restCert && work.secrets.some((f) => f.path === restCert.certPath || f.path === restCert.keyPath)) {
    await ensureRestCertificateServed(access, node, log);
  }
  if (effects.has("restart-etcd")) {
    log(`${node}: restarting etcd.service`);
    await restartUnit(access, node, "etcd.service");
  }
  if (effects.has("restart-haproxy") || (effects.has("reload-haproxy") && !transport.reloadService)) {
    log(`${node}: restarting haproxy.service`);
    await restartUnit(access, node, "haproxy.service");
  } else if (effects.has("reload-haproxy") && transport.reloadService) {
    log(`${node}: reloading haproxy.service`);
    await transport.reloadService(node, "haproxy.service");
  }
  if (work.pendingRestart && !effects.has("restart-patroni")) {
    log(`${node}: patronictl restart (pending restart)`);
    const result = await patronictl(access, node, ["restart", access.plan.config.patroni.scope, node, "--force"], 180_000);
    if (result.code !== 0) throw new Error(`${node}: patronictl restart failed: ${(result.stderr || result.stdout).trim()}`);
  }
}

/** Patroni 4 vocabulary: --leader/--candidate. Waits until the candidate holds the leader lock. */
export async function switchover(access: ClusterAccess, from: string, to: string, budgetMs: number): Promise<void> {
  const result = await patronictl(access, to, ["switchover", "--leader", from, "--candidate", to, "--force"], 120_000);
  if (result.code !== 0) throw new Error(`patronictl switchover --leader ${from} --candidate ${to} failed: ${(result.stderr || result.stdout).trim()}`);
  const deadline = Date.now() + budgetMs;
  while (Date.now() < deadline) {
    const view = await clusterView(access, to).catch(() => undefined);
    if (view?.members.some((m) => m.name === to && m.role === "leader" && m.state === "running")) return;
    await sleep(1000);
  }
  throw new Error(`${to} did not become the leader within ${Math.round(budgetMs / 1000)} s of the switchover`);
}

/**
 * Applies the plan's dynamic settings: nothing when they match, else one
 * patch, then waits (bounded) until every member runs with it — each changed
 * parameter either in effect or pending a restart, and the member's own
 * Patroni reporting the new configuration.
 */
export async function applyDynamicConfig(
  access: ClusterAccess,
  desired: DynamicSettings,
  options: { log: (line: string) => void; budgetMs: number },
): Promise<Record<string, unknown>> {
  const live = await liveDynamicConfig(access);
  const patch = dynamicConfigPatch(live, desired);
  if (Object.keys(patch).length === 0) {
    options.log("Patroni dynamic configuration already matches the plan");
    return patch;
  }
  const leader = (await clusterView(access)).members.find((m) => m.role === "leader")?.name ?? observers(access)[0];
  options.log(`patching Patroni dynamic configuration on ${leader}: ${JSON.stringify(patch)}`);
  const result = await patronictl(access, leader, ["edit-config", "--apply", "-", "--force"], 60_000, JSON.stringify(patch));
  if (result.code !== 0) throw new Error(`patronictl edit-config --apply failed on ${leader}: ${(result.stderr || result.stdout).trim()}`);
  const parameters = Object.entries(patchedParameters(patch)).filter(([, value]) => value !== null);
  const members = nodesWithRole(access.plan, "postgres")
    .map((n) => n.name)
    .filter((n) => !access.isolated.has(n));
  const started = Date.now();
  let waiting: string[] = members;
  for (;;) {
    const reasons = new Map<string, string>();
    await Promise.all(
      waiting.map(async (node) => {
        try {
          const reply = await patroniRest(access, node, "/config");
          const seen = reply.status === 200 ? (JSON.parse(reply.body) as Record<string, unknown>) : {};
          if (Object.keys(dynamicConfigPatch(seen, desired)).length) return void reasons.set(node, "Patroni has not seen the new configuration");
          if (parameters.length) {
            const names = parameters.map(([name]) => `'${name.replace(/'/g, "''")}'`).join(",");
            const rows = await sqlOnNode(access, node, `select name, current_setting(name), pending_restart from pg_settings where name in (${names})`);
            const unapplied = parameters.filter(([name, value]) => {
              const row = rows.find((r) => r[0] === name);
              return !row || (!sameSetting(value, row[1]) && row[2] !== "t");
            });
            if (unapplied.length) reasons.set(node, `${unapplied.map(([name]) => name).join(", ")} not applied yet`);
          }
        } catch (error) {
          reasons.set(node, (error as Error).message);
        }
      }),
    );
    if (reasons.size === 0) break;
    if (Date.now() - started > options.budgetMs) {
      throw new Error(
        `dynamic configuration not applied on every member within ${Math.round(options.budgetMs / 1000)} s: ${[...reasons].map(([node, why]) => `${node}: ${why}`).join("; ")}`,
      );
    }
    waiting = [...reasons.keys()];
    await sleep(1000);
  }
  options.log(`every member runs the new dynamic configuration (${Math.round((Date.now() - started) / 1000)} s)`);
  return patch;
}

/** The whole rolling change; throws (naming check and node) when a step cannot be made safely. */
export async function runRollout(ctx: RolloutContext): Promise<RolloutReport> {
  const { access, log } = ctx;
  const budget = ctx.healthBudgetMs ?? 300_000;
  const pollMs = ctx.pollMs ?? 5000;
  const limits = ctx.limits ?? DEFAULT_LIMITS;
  const started = Date.now();
  const at = (): number => Math.round((Date.now() - started) / 100) / 10;
  const steps: RolloutRecord[] = [];
  const desired = dynamicSettings(access.plan);
  // Gives Patroni an HA cycle to publish what a step changed before it is judged.
  const settleMs = (Number(((await liveDynamicConfig(access).catch(() => ({}))) as Record<string, unknown>).loop_wait) || access.plan.config.patroni.loopWait) * 1000 + 1000;

  await waitUntilReady(access, { budgetMs: budget, pollMs, log, live: true, what: "ready before the rollout" });
  const patch = await applyDynamicConfig(access, desired, { log, budgetMs: Math.max(60_000, 4 * settleMs) });
  if (Object.keys(patch).length) {
    steps.push({ atSeconds: at(), kind: "patch", detail: JSON.stringify(patch) });
    await sleep(settleMs);
  }

  const progress: RolloutProgress = { attempts: {}, switchovers: 0 };
  let switched: { from: string; to: string } | undefined;
  let waitingSince: number | undefined;
  for (;;) {
    const { view } = await observe(access);
    const step = nextStep(view, progress, limits);
    if (step.kind === "done") break;
    if (step.kind === "stop") throw new Error(`rollout stopped: ${step.reason}`);
    if (step.kind === "wait-healthy") {
      waitingSince ??= Date.now();
      if (Date.now() - waitingSince > budget) throw new Error(`rollout stopped: the cluster did not become ready within ${Math.round(budget / 1000)} s; failing: ${step.reason}`);
      log(`waiting for the cluster: ${step.reason}`);
      await sleep(pollMs);
      continue;
    }
    waitingSince = undefined;
    if (step.kind === "switchover") {
      log(`switchover ${step.from} → ${step.to} (the leader's change restarts PostgreSQL)`);
      steps.push({ atSeconds: at(), kind: "switchover", node: step.from, detail: `${step.from} → ${step.to}` });
      await switchover(access, step.from, step.to, budget);
      progress.switchovers++;
      switched = { from: step.from, to: step.to };
    } else {
      log(`${step.node}: ${describeWork(step.work)}`);
      steps.push({ atSeconds: at(), kind: "apply", node: step.node, detail: describeWork(step.work) });
      progress.attempts[step.node] = (progress.attempts[step.node] ?? 0) + 1;
      await applyWork(access, step.work, log);
    }
    ctx.onStep?.(step, at());
    await sleep(settleMs);
  }

  const final = await waitUntilReady(access, { budgetMs: budget, pollMs, log, live: false, what: "ready with the plan's settings" });
  const remaining = dynamicConfigPatch(await liveDynamicConfig(access), desired);
  if (Object.keys(remaining).length) throw new Error(`rollout finished but Patroni's configuration still differs from the plan: ${JSON.stringify(remaining)}`);
  const seconds = (Date.now() - started) / 1000;
  log(`rollout done in ${seconds.toFixed(1)} s: ${steps.length} step(s)${switched ? `, switchover ${switched.from} → ${switched.to}` : ""}`);
  return { patch, steps, switchover: switched, seconds, final };
}
