import { nodesWithRole, type NodePlan } from "../plan";
import { patroniRest, sqlFromClient, sqlOnNode } from "../checks/cluster";
import { monotonicSeconds, sleep } from "./exec";
import {
  FAILOVER_BUDGET_MS,
  judgeWrites,
  leaderNow,
  outcome,
  poll,
  restoreInto,
  STALL_LIMIT_SECONDS,
  waitBaseline,
  withWriter,
  writerHaproxy,
  type DrillContext,
  type DrillDefinition,
  type DrillOutcome,
} from "./drills";

/**
 * The drills of a cluster spread over regions, beyond failover itself
 * (issue #15): etcd losing its quorum while PostgreSQL is fine (failsafe
 * mode), and reads that stay in their region and within a lag bound.
 */

/** Where lab/roots.ts puts lab/assets/read-your-writes.py in the client's root. */
export const READ_YOUR_WRITES_PATH = "/etc/pgha-lab/read-your-writes.py";

/**
 * Drill 15: etcd loses its quorum (a majority of its members stopped) while
 * every PostgreSQL member and the network between them are fine. With
 * failsafe_mode the primary asks every member it last listed (POST
 * /failsafe), all answer, and it stays primary: writes go on. Without it
 * the primary demoted itself 9.3 s after the loss and writes stopped until
 * etcd returned (issue #15). The window is two leader-key TTLs, so the key
 * would have expired twice.
 */
async function etcdQuorumLossDrill(ctx: DrillContext, repetition: number): Promise<DrillOutcome> {
  const id = "etcd-quorum-loss";
  const result = outcome(id, repetition);
  const baseline = await waitBaseline(ctx);
  const oldPrimary = baseline.leader as string;
  result.oldPrimary = oldPrimary;
  const { plan } = ctx.access;
  if (!plan.config.patroni.failsafeMode) throw new Error("patroni.failsafeMode is off in the lab's plan: this drill proves failsafe mode");
  // A majority, the primary's own member first: the member left alone cannot form a quorum.
  const members = [...plan.etcd.members].sort((a, b) => Number(b.node === oldPrimary) - Number(a.node === oldPrimary));
  const stopped = members.slice(0, Math.floor(members.length / 2) + 1);
  result.details.stoppedMembers = stopped.map((m) => m.name);
  await withWriter(ctx, id, repetition, writerHaproxy(ctx), async (writer) => {
    ctx.progress(`stopping etcd on ${stopped.map((m) => m.node).join(", ")}`);
    const instant = monotonicSeconds();
    await Promise.all(stopped.map((m) => ctx.transport.stopService(m.node, "etcd.service")));
    const windowMs = 2 * plan.config.patroni.ttl * 1000;
    const end = Date.now() + windowMs;
    let failsafeSeenAfter: number | undefined;
    while (Date.now() < end) {
      ctx.progress(`etcd without quorum: ${Math.round((end - Date.now()) / 1000)} s left, ${writer.acks().length} acks`);
      if (failsafeSeenAfter === undefined) {
        const status = await patroniRest(ctx.access, oldPrimary, "/patroni").catch(() => undefined);
        if (status?.status === 200 && (JSON.parse(status.body) as { failsafe_mode_is_active?: boolean }).failsafe_mode_is_active === true)
          failsafeSeenAfter = monotonicSeconds() - instant;
      }
      await sleep(1000);
    }
    result.details.failsafeActiveAfterSeconds = failsafeSeenAfter;
    if (failsafeSeenAfter === undefined)
      result.problems.push(`${oldPrimary} never reported failsafe_mode_is_active while etcd had no quorum (GET /patroni): the drill did not exercise failsafe mode`);
    ctx.progress("starting etcd again");
    await Promise.all(stopped.map((m) => ctx.transport.startService(m.node, "etcd.service")));
    const primaryNow = await leaderNow(ctx, 60_000);
    result.newPrimary = primaryNow;
    if (primaryNow !== oldPrimary) result.problems.push(`the primary changed (${oldPrimary} → ${primaryNow}) although every member reached every other`);
    await writer.stop();
    await judgeWrites(ctx, result, writer, instant, oldPrimary, primaryNow);
    if (result.maxGapAfterSeconds > STALL_LIMIT_SECONDS)
      result.problems.push(
        `writes stalled for ${result.maxGapAfterSeconds.toFixed(1)} s while etcd had no quorum (limit ${STALL_LIMIT_SECONDS} s): the primary did not stay on failsafe`,
      );
  });
  await restoreInto(ctx, result);
  result.ok = result.problems.length === 0;
  return result;
}

/** The member that answered a connection through `haproxy`:`port` (by inet_server_addr), or the error. */
async function answeringMember(ctx: DrillContext, haproxy: NodePlan, port: number): Promise<string> {
  const answer = await sqlFromClient(ctx.access, haproxy.privateIp, port, "select host(inet_server_addr())", { timeoutMs: 10_000 });
  if (answer.code !== 0) return `error: ${answer.stderr.trim().split("\n")[0] ?? ""}`;
  const ip = answer.stdout.trim();
  return ctx.access.plan.nodes.find((n) => n.privateIp === ip)?.name ?? ip;
}

async function answers(ctx: DrillContext, haproxy: NodePlan, port: number, count: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < count; i++) seen.push(await answeringMember(ctx, haproxy, port));
  return seen;
}

function tally(names: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of names) counts[name] = (counts[name] ?? 0) + 1;
  return counts;
}

/** Reads per phase of the local-reads drill: enough that round robin over two servers would show both. */
const READS_PER_PHASE = 12;

/** WAL written on the primary so a replica that receives nothing is more than `lagBytes` of replay behind. */
async function outrun(ctx: DrillContext, leader: string, lagBytes: number): Promise<void> {
  // Each switch after a record starts a new 16 MiB segment: enough switches put the primary more than the bound ahead.
  const switches = Math.ceil(lagBytes / (16 * 1024 * 1024)) + 1;
  for (let i = 0; i < switches; i++) await sqlOnNode(ctx.access, leader, "select pg_logical_emit_message(false, 'pgha-lab', 'outrun'), pg_switch_wal()");
  await sqlOnNode(ctx.access, leader, "select pg_logical_emit_message(false, 'pgha-lab', 'outrun')");
}

/**
 * Drill 16: reads on the read port stay in the HAProxy's region while its
 * replica there is within the lag bound, and move to the other regions'
 * replicas once it is not. The region under test is the asynchronous
 * replica's (so the fault stalls no commit). The path between the primary
 * and that replica is cut (both still reach everything else, etcd
 * included) and the primary writes more WAL than `haproxy.replicaMaxLagBytes`:
 * Patroni's `/replica?lag=` answers 503 there, HAProxy takes it out, its
 * `backup` servers (the other regions) serve; the path heals, the replica
 * catches up and the reads come home. Pausing replay instead would not hold:
 * Patroni resumes a paused replay on every loop. Then the replica's Patroni
 * is frozen (SIGSTOP): its REST API hangs while PostgreSQL serves on, the
 * check times out and the reads leave again until it resumes. Then, on the sync
 * port, a commit made with `synchronous_commit = remote_apply` is read back at
 * once (the port's promise); with `on` the misses are counted, not judged.
 */
async function localReadsDrill(ctx: DrillContext, repetition: number): Promise<DrillOutcome> {
  const id = "local-reads";
  const result = outcome(id, repetition);
  const baseline = await waitBaseline(ctx);
  const leader = baseline.leader as string;
  result.oldPrimary = leader;
  result.newPrimary = leader;
  const { plan } = ctx.access;
  const asyncReplica = baseline.replicas[0];
  const region = plan.regions.find((r) => r.nodes.some((n) => n.roles.has("haproxy")) && r.nodes.some((n) => n.name === asyncReplica));
  const replica = region?.nodes.find((n) => n.name === asyncReplica);
  const haproxy = region?.nodes.find((n) => n.roles.has("haproxy"));
  if (!region || !replica || !haproxy) throw new Error(`no region with an HAProxy and the asynchronous replica (${asyncReplica ?? "none"})`);
  const others = nodesWithRole(plan, "postgres")
    .filter((n) => n.region !== region.name && n.name !== leader)
    .map((n) => n.name);
  const port = plan.config.haproxy.replicaPort;
  const { replicaMaxLagBytes } = plan.config.haproxy;
  const elsewhere = (name: string) => name !== replica.name && !name.startsWith("error");
  result.details.region = region.name;
  result.details.localReplica = replica.name;
  result.details.via = haproxy.name;
  const t0 = monotonicSeconds();
  try {
    ctx.progress(`${READS_PER_PHASE} reads through ${haproxy.name}:${port}`);
    const home = await answers(ctx, haproxy, port, READS_PER_PHASE);
    result.details.readsWhileLocalHealthy = tally(home);
    if (home.some((name) => name !== replica.name))
      result.problems.push(`reads through ${haproxy.name} went to ${JSON.stringify(tally(home))}, not only to ${replica.name} of ${region.name}`);

    ctx.progress(`cutting ${leader} ↔ ${replica.name}, the primary writes past ${replicaMaxLagBytes} B`);
    await ctx.faults.cutPath(leader, replica.name);
    const paused = monotonicSeconds();
    await outrun(ctx, leader, replicaMaxLagBytes);
    const moved = await poll(FAILOVER_BUDGET_MS, async () => (elsewhere(await answeringMember(ctx, haproxy, port)) ? true : undefined));
    result.details.movedAwayAfterSeconds = monotonicSeconds() - paused;
    if (!moved)
      result.problems.push(
        `reads through ${haproxy.name} stayed on ${replica.name} for ${FAILOVER_BUDGET_MS / 1000} s after the primary wrote ${replicaMaxLagBytes} B it could not receive`,
      );
    const away = await answers(ctx, haproxy, port, READS_PER_PHASE);
    result.details.readsWhileLocalLagging = tally(away);
    if (away.some((name) => !others.includes(name)))
      result.problems.push(`with ${replica.name} lagging, reads through ${haproxy.name} went to ${JSON.stringify(tally(away))}, not only to ${others.join(", ")}`);

    ctx.progress(`healing ${leader} ↔ ${replica.name}`);
    await ctx.faults.restorePath(leader, replica.name);
    const healed = monotonicSeconds();
    const back = await poll(FAILOVER_BUDGET_MS, async () => ((await answeringMember(ctx, haproxy, port)) === replica.name ? true : undefined));
    result.details.backHomeAfterSeconds = monotonicSeconds() - healed;
    if (!back) result.problems.push(`reads through ${haproxy.name} did not return to ${replica.name} within ${FAILOVER_BUDGET_MS / 1000} s of its path healing`);

    // A hung REST API (Patroni frozen, PostgreSQL serving on): HAProxy's check times out (haproxy.checkTimeoutMs).
    ctx.progress(`freezing Patroni on ${replica.name}: its REST API hangs, PostgreSQL runs on`);
    const frozen = await ctx.transport.signalProcesses(replica.name, "patroni", "SIGSTOP");
    if (frozen === 0) result.problems.push(`found no Patroni process on ${replica.name} to freeze`);
    const froze = monotonicSeconds();
    const out = await poll(FAILOVER_BUDGET_MS, async () => (elsewhere(await answeringMember(ctx, haproxy, port)) ? true : undefined), 250);
    result.details.hungRestApiOutAfterSeconds = monotonicSeconds() - froze;
    if (!out) result.problems.push(`reads through ${haproxy.name} stayed on ${replica.name} for ${FAILOVER_BUDGET_MS / 1000} s with its Patroni frozen`);
    await ctx.transport.signalProcesses(replica.name, "patroni", "SIGCONT");
    const thawed = monotonicSeconds();
    const home2 = await poll(FAILOVER_BUDGET_MS, async () => ((await answeringMember(ctx, haproxy, port)) === replica.name ? true : undefined));
    result.details.backAfterThawSeconds = monotonicSeconds() - thawed;
    if (!home2) result.problems.push(`reads through ${haproxy.name} did not return to ${replica.name} within ${FAILOVER_BUDGET_MS / 1000} s of its Patroni resuming`);
  } finally {
    await ctx.faults.restorePath(leader, replica.name).catch(() => undefined);
    await ctx.transport.signalProcesses(replica.name, "patroni", "SIGCONT").catch(() => undefined);
  }

  ctx.progress("read-your-writes on the sync port");
  const probe = await ctx.transport.run(
    ctx.access.client,
    [
      "python3",
      READ_YOUR_WRITES_PATH,
      "--host",
      writerHaproxy(ctx).privateIp,
      "--write-port",
      String(plan.config.haproxy.primaryPort),
      "--read-port",
      String(plan.config.haproxy.synchronousPort),
      "--run",
      `${id}-${repetition}-${Date.now()}`,
      "--sslrootcert",
      ctx.access.clientFiles.caCert,
    ],
    { env: { PGPASSWORD: ctx.access.superuserPassword }, timeoutMs: 120_000 },
  );
  if (probe.code !== 0) result.problems.push(`read-your-writes probe failed: ${probe.stderr.trim().split("\n").slice(-1)[0] ?? ""}`);
  else {
    const sync = JSON.parse(probe.stdout) as Record<"on" | "remote_apply", { commits: number; missed: number; server: string }>;
    result.details.readYourWrites = sync;
    if (sync.remote_apply.missed > 0)
      result.problems.push(
        `${sync.remote_apply.missed} of ${sync.remote_apply.commits} commits made with synchronous_commit=remote_apply were not visible on the sync port right after`,
      );
  }
  result.details.seconds = monotonicSeconds() - t0;
  await restoreInto(ctx, result);
  result.ok = result.problems.length === 0;
  return result;
}

export const REGION_DRILLS: DrillDefinition[] = [
  {
    id: "etcd-quorum-loss",
    title: "etcd loses its quorum (a majority stopped) while PostgreSQL and the network are fine: failsafe mode keeps the primary, writes continue",
    run: etcdQuorumLossDrill,
  },
  {
    id: "local-reads",
    title: "reads stay in the HAProxy's region within the lag bound and move away when its replica lags; remote_apply commits are read back on the sync port",
    run: localReadsDrill,
    measuresRto: false,
  },
];
