/**
 * Restores from the pgBackRest repositories, through a NodeTransport only (SSM
 * on AWS, the lab's machines in the lab), as commands:
 *
 * - `restoreCluster`: the whole cluster in place, to a point in time or to the
 *   end of the archive (every database node lost). Patroni stops everywhere,
 *   its cluster state is removed from etcd (`patronictl remove`), one node
 *   restores and promotes (pgha-restore), Patroni adopts it as the leader, and
 *   every other member restores the same point of its own region's repository
 *   as a standby and follows.
 * - `rebuildReplica`: `patronictl reinit` of one member, which takes Patroni's
 *   create_replica_methods in order: pgbackrest from the member's own
 *   region's repository first.
 */
import { patronictl, patronictlList, clusterView, postgresNodes, type ClusterAccess } from "../checks/cluster";
import { pgbackrest, stanzaInfo, type StanzaInfo } from "../checks/backup";
import { NODE_PATHS, postgresPaths, repositoryOf, findNode, type NodePlan } from "../plan";
import { backupServiceName, type BackupType } from "../cloud-init/pgbackrest";
import type { NodeTransport, RunResult } from "../checks/transport";
import { waitUntilReady } from "./rollout";

/** PostgreSQL's timestamptz input as pgBackRest passes it to recovery_target_time; a zone is required. */
const TARGET_TIME = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:?\d{2})?)$/;

export function checkTargetTime(value: string): string {
  if (!TARGET_TIME.test(value) || Number.isNaN(Date.parse(value.replace(" ", "T").replace(/([+-]\d{2})$/, "$1:00")))) {
    throw new Error(`--target-time = ${JSON.stringify(value)}: must be a timestamp with a time zone, such as 2026-12-02 10:15:00+00 or 2026-12-02T10:15:00.250Z`);
  }
  return value;
}

/** The target as Unix seconds (for choosing backups). */
function targetSeconds(value: string): number {
  return Date.parse(value.replace(" ", "T").replace(/([+-]\d{2})$/, "$1:00")) / 1000;
}

/** The newest good backup of a repository that ended before the target (any, without one). */
export function backupBefore(info: StanzaInfo, repository: number, target?: string): string | undefined {
  const repo = info.repositories.find((r) => r.index === repository);
  const candidates = (repo?.backups ?? []).filter((b) => target === undefined || b.stop < targetSeconds(target));
  return candidates[candidates.length - 1]?.label;
}

export interface RestoreOptions {
  /** Recover to just before the first commit after this instant; absent: to the end of the archive. */
  targetTime?: string;
  /** The node that restores and becomes the leader (default: the highest failover_priority). */
  node?: string;
  log: (line: string) => void;
  /** Budget for the cluster to be ready again once every member is started. */
  healthBudgetMs: number;
  pollMs?: number;
}

export interface RestoreReport {
  leader: string;
  /** The backup set each node restored. */
  sets: Record<string, string>;
  /** Seconds from the first stop to a ready cluster, and of the leader's own restore. */
  seconds: { total: number; leaderRestore: number };
}

function preferredLeader(members: NodePlan[]): NodePlan {
  const sorted = [...members].sort((a, b) => b.failoverPriority - a.failoverPriority);
  const first = sorted[0];
  if (!first) throw new Error("the plan has no database node");
  return first;
}

async function mustRun(access: ClusterAccess, node: string, argv: string[], what: string, timeoutMs: number, user?: string): Promise<string> {
  const result = await access.transport.run(node, argv, { timeoutMs, user });
  if (result.code !== 0) throw new Error(`${what} on ${node} failed (exit ${result.code}): ${(result.stderr.trim() || result.stdout.trim()).split("\n").slice(-8).join("\n")}`);
  return result.stdout;
}

/**
 * The whole cluster from the repositories. Nothing is stopped until every
 * node's repository is known to hold a backup that serves the target.
 */
export async function restoreCluster(access: ClusterAccess, options: RestoreOptions): Promise<RestoreReport> {
  const { plan } = access;
  const target = options.targetTime === undefined ? undefined : checkTargetTime(options.targetTime);
  const members = postgresNodes(plan);
  const leader = options.node ? findNode(plan, options.node) : preferredLeader(members);
  if (!leader.roles.has("postgres")) throw new Error(`--node = ${JSON.stringify(leader.name)}: must be a node with the postgres role`);
  const pg = postgresPaths(plan.config.versions.postgresMajor);
  const log = options.log;

  // Which backup each node restores, decided before anything stops.
  const info = await stanzaInfo(access, leader.name);
  const sets: Record<string, string> = {};
  for (const member of members) {
    const repository = repositoryOf(plan, member).index;
    const set = backupBefore(info, repository, target);
    if (!set) throw new Error(`repo${repository} (${member.region}) holds no backup${target ? ` that ended before ${target}` : ""}; nothing was stopped`);
    sets[member.name] = set;
  }
  log(`restoring ${plan.backup.stanza}${target ? ` to ${target}` : " to the end of the archive"}: ${leader.name} leads; sets ${JSON.stringify(sets)}`);

  const started = Date.now();
  // Standbys first, then whoever leads: no member is left to take over from a stopped primary.
  const view = await clusterView(access).catch(() => undefined);
  const primary = view?.members.find((m) => m.role === "leader")?.name;
  const order = [...members.filter((m) => m.name !== primary), ...members.filter((m) => m.name === primary)];
  for (const member of order) {
    await access.transport.stopService(member.name, "patroni.service");
    log(`stopped Patroni on ${member.name}`);
  }
  // A backup that was running goes too: its timer starts the next one.
  for (const member of members) {
    for (const type of ["full", "diff"] as const) await access.transport.stopService(member.name, backupServiceName(type)).catch(() => undefined);
  }

  const restoreStarted = Date.now();
  // Its own region's repository first; another region's when that one fails (a region lost, a set that is damaged).
  const ownRepo = repositoryOf(plan, leader).index;
  const repositories = [ownRepo, ...plan.backup.repositories.map((r) => r.index).filter((i) => i !== ownRepo)].filter((i) => backupBefore(info, i, target));
  let output: string | undefined;
  const failures: string[] = [];
  for (const repository of repositories) {
    const restoreArgs = [NODE_PATHS.restore, plan.backup.stanza, String(repository), pg.dataDir, pg.binDir, ...(target ? [target] : [])];
    const restored = await access.transport.run(leader.name, restoreArgs, { timeoutMs: 3_600_000 });
    if (restored.code === 0) {
      output = restored.stdout;
      sets[leader.name] = `${backupBefore(info, repository, target) ?? ""} (repo${repository})`;
      break;
    }
    const why = (restored.stderr.trim() || restored.stdout.trim()).split("\n").slice(-6).join("\n");
    failures.push(`repo${repository}: ${why}`);
    log(`${leader.name}: the restore from repo${repository} failed:\n${why}`);
  }
  if (output === undefined) {
    // pgha-restore left the node's data as it was and etcd still holds the cluster: start everyone again.
    for (const member of [...order].reverse()) await startPatroni(access, member.name, log);
    throw new Error(`pgha-restore on ${leader.name} failed from every repository; every member's data is as it was and Patroni is started again:\n${failures.join("\n")}`);
  }
  log(`${leader.name}: ${output.trim().split("\n").pop() ?? ""}`);
  // The cluster's state in etcd (leader, members, initialize key, history) goes: Patroni adopts the restored node anew.
  // patronictl asks for the scope, then for "Yes I am aware", then, while etcd still holds a leader key (a leader
  // killed rather than stopped keeps it until its TTL runs out), for that leader's name.
  const dcsLeader = (await patronictlList(access, leader.name).catch(() => [])).find((m) => m.role === "leader")?.name ?? "";
  const scope = plan.config.patroni.scope;
  const removed = await patronictl(access, leader.name, ["remove", scope], 60_000, `${scope}\nYes I am aware\n${dcsLeader}\n`);
  if (removed.code !== 0) throw new Error(`patronictl remove on ${leader.name} failed: ${removed.stderr.trim() || removed.stdout.trim()}`);
  log(`removed ${plan.config.patroni.scope} from etcd`);
  const leaderRestore = (Date.now() - restoreStarted) / 1000;
  await startPatroni(access, leader.name, log);
  await waitForLeader(access, leader.name, options.healthBudgetMs, log);

  // Every other member: the same point from its own region's repository, as a standby that follows the new timeline.
  await Promise.all(
    members
      .filter((m) => m.name !== leader.name)
      .map(async (member) => {
        const repository = repositoryOf(plan, member).index;
        const script = 'set -e; find "$1" -mindepth 1 -delete; install -d -o postgres -g postgres -m 0700 "$1"';
        await mustRun(access, member.name, ["sh", "-c", script, "sh", pg.dataDir], "emptying PGDATA", 600_000);
        const restored = await pgbackrest(access, member.name, [`--repo=${repository}`, `--set=${sets[member.name] ?? ""}`, "--type=standby", "restore"], 3_600_000);
        if (restored.code !== 0) throw new Error(`pgbackrest restore on ${member.name} failed: ${restored.stderr.trim() || restored.stdout.trim()}`);
        await startPatroni(access, member.name, log);
        log(`${member.name}: restored ${sets[member.name]} from repo${repository} as a standby; Patroni started`);
      }),
  );
  await waitUntilReady(access, { budgetMs: options.healthBudgetMs, pollMs: options.pollMs, log, what: "restored cluster ready" });
  return { leader: leader.name, sets, seconds: { total: (Date.now() - started) / 1000, leaderRestore } };
}

/**
 * `systemctl start patroni`. A start that fails is left to the unit's
 * Restart=on-failure (seen once in the lab: systemd's "Failed to spawn
 * executor" right after pgha-restore); the caller waits for the outcome.
 */
async function startPatroni(access: ClusterAccess, node: string, log: (line: string) => void): Promise<void> {
  try {
    await access.transport.startService(node, "patroni.service");
  } catch (error) {
    log(`${node}: ${(error as Error).message.split("\n")[0]}; systemd restarts it (Restart=on-failure)`);
  }
}

async function waitForLeader(access: ClusterAccess, node: string, budgetMs: number, log: (line: string) => void): Promise<void> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    const view = await clusterView(access, node).catch(() => undefined);
    const me = view?.members.find((m) => m.name === node);
    if (me?.role === "leader" && me.state === "running") {
      log(`${node} is the leader (timeline ${me.timeline})`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`${node} did not become the leader within ${Math.round(budgetMs / 1000)} s (${me ? `${me.role} ${me.state}` : "not listed"})`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/**
 * One member again from scratch: `patronictl reinit --force --wait`, with
 * create_replica_methods (pgbackrest from its own region's repository, then
 * basebackup). Returns the method Patroni reports it used.
 */
export async function rebuildReplica(
  access: ClusterAccess,
  member: string,
  options: { log: (line: string) => void; healthBudgetMs: number; pollMs?: number },
): Promise<{ method: string; seconds: number }> {
  const node = findNode(access.plan, member);
  if (!node.roles.has("postgres")) throw new Error(`member = ${JSON.stringify(member)}: must be a node with the postgres role`);
  const view = await clusterView(access);
  if (view.members.find((m) => m.name === member)?.role === "leader")
    throw new Error(`member = ${JSON.stringify(member)}: is the leader; switch over first (patronictl switchover)`);
  const started = Date.now();
  const since = new Date(started - 1000)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, " UTC");
  const result = await patronictl(access, member, ["reinit", access.plan.config.patroni.scope, member, "--force", "--wait"], 3_600_000);
  if (result.code !== 0) throw new Error(`patronictl reinit ${member} failed: ${result.stderr.trim() || result.stdout.trim()}`);
  const journal = await access.transport.run(member, ["journalctl", "-u", "patroni.service", "--since", since, "--no-pager", "-o", "cat"], { timeoutMs: 30_000 });
  const method = /replica has been created using (\S+)/.exec(journal.stdout)?.[1] ?? "unknown";
  options.log(`${member}: reinitialised with ${method}`);
  await waitUntilReady(access, { budgetMs: options.healthBudgetMs, pollMs: options.pollMs, log: options.log, what: "cluster ready" });
  return { method, seconds: (Date.now() - started) / 1000 };
}

export function backupType(value: string): BackupType {
  if (value !== "full" && value !== "diff") throw new Error(`--type = ${JSON.stringify(value)}: must be full or diff`);
  return value;
}

/**
 * Whether `unit` last failed because systemd could not spawn its process at
 * all (Result=resources, "Failed to spawn executor"), as opposed to its
 * program failing. Seen now and then in the lab's machines (docs/backups.md,
 * Known limits); a start that never ran is safe to repeat.
 */
export async function unitFailedToSpawn(transport: NodeTransport, node: string, unit: string): Promise<boolean> {
  const shown = await transport.run(node, ["systemctl", "show", "--property=ActiveState,Result", unit], { timeoutMs: 30_000 });
  return /^ActiveState=failed$/m.test(shown.stdout) && /^Result=resources$/m.test(shown.stdout);
}

/**
 * Why a unit's last run failed, from its journal: the lines from its last
 * "Starting" on that are pgBackRest's ERROR or WARN or the script's own
 * (`pgha-backup: ...`), then the run's last few lines, each cut to 300
 * characters. A plain tail is not enough: pgBackRest logs each command's whole
 * option list, so 15 lines of tail held the successful repositories and not the
 * one that failed (drill 13, 2026-12-03).
 */
export function unitFailureLines(journal: string, tail = 4): string[] {
  const lines = journal.split("\n").filter((line) => line.trim() !== "");
  const lastStart = lines.map((line) => line.startsWith("Starting ")).lastIndexOf(true);
  const run = lastStart >= 0 ? lines.slice(lastStart) : lines;
  const telling = run.filter((line) => /\b(ERROR|WARN):|^pgha-backup: /.test(line));
  const picked = [...new Set([...telling, ...run.slice(-tail)])];
  return picked.map((line) => (line.length > 300 ? `${line.slice(0, 300)}…` : line));
}

/** {@link unitFailureLines} of `unit` on `node`. */
export async function unitFailure(transport: NodeTransport, node: string, unit: string): Promise<string> {
  const journal = await transport.run(node, ["journalctl", "-u", unit, "-n", "300", "--no-pager", "-o", "cat"], { timeoutMs: 30_000 });
  return unitFailureLines(journal.stdout).join("\n");
}

/**
 * A backup now, by the timers' own unit on the primary (`systemctl start` of
 * a oneshot returns when the backup to every repository has ended).
 */
export async function takeBackup(access: ClusterAccess, type: BackupType): Promise<{ node: string; seconds: number }> {
  const view = await clusterView(access);
  const leader = view.members.find((m) => m.role === "leader" && m.state === "running")?.name;
  if (!leader) throw new Error("no running leader to back up from");
  const started = Date.now();
  const unit = backupServiceName(type);
  const start = async (): Promise<RunResult> => access.transport.run(leader, ["systemctl", "start", unit], { timeoutMs: 3_600_000 });
  let result = await start();
  // Once more if systemd could not even spawn the unit's process: nothing of pgBackRest ran, so nothing to undo.
  if (result.code !== 0 && (await unitFailedToSpawn(access.transport, leader, unit))) result = await start();
  if (result.code !== 0) {
    // systemctl only says "see journalctl"; pgBackRest's own error is in the unit's journal.
    throw new Error(`${type} backup on ${leader} failed (exit ${result.code}); ${unit}'s journal:\n${await unitFailure(access.transport, leader, unit)}`);
  }
  return { node: leader, seconds: (Date.now() - started) / 1000 };
}
