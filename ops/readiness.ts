/**
 * What the readiness gate and the rollout Commands of `pulumi up` run
 * (components/readiness-gate.ts), from the project root:
 *
 *   node --import tsx ops/readiness.ts gate    --stack dev --region-instances '{"ap-northeast-2":{"pg-seoul-1":"i-0…",…},…}'
 *   node --import tsx ops/readiness.ts rollout --stack dev --region-instances '…'
 *
 * The stack's validated configuration arrives as JSON in PGHA_CONFIG (no
 * secret is part of it). Nodes are reached over SSM Run Command with the
 * caller's AWS credentials (those of `pulumi up`); the checks are the ones
 * the lab runs too (checks/readiness.ts), through ops/ssm-transport.ts.
 *
 * PGHA_SKIP_READINESS=1 in the environment of `pulumi up` skips both (an
 * emergency switch: the update then proves nothing about the cluster).
 *
 * The backup commands (docs/backups.md) take the same options and run by hand:
 *
 *   node --import tsx ops/readiness.ts backup          --stack dev --region-instances '…' [--type full|diff]
 *   node --import tsx ops/readiness.ts restore         --stack dev --region-instances '…' [--target-time T] [--node N]
 *   node --import tsx ops/readiness.ts rebuild-replica --stack dev --region-instances '…' <member>
 */
import { Command, InvalidArgumentError } from "commander";
import { buildClusterPlan, NODE_PATHS, nodesWithRole, type ClusterPlan } from "../plan";
import type { ClusterAccess } from "../checks/cluster";
import type { NodeTransport } from "../checks/transport";
import { backupType, checkTargetTime, rebuildReplica, restoreCluster, takeBackup } from "./restore";
import { runRollout, waitUntilReady } from "./rollout";
import { SsmTransport, type SsmTarget } from "./ssm-transport";

/** `{ awsRegion: { node: instanceId } }`, what the component passes. */
export type RegionInstances = Record<string, Record<string, string>>;

/** Node → instance and region, checked against the plan: every node once, in its own region. */
export function targetsFromRegionInstances(plan: ClusterPlan, regionInstances: RegionInstances): Record<string, SsmTarget> {
  const targets: Record<string, SsmTarget> = {};
  const problems: string[] = [];
  for (const [region, nodes] of Object.entries(regionInstances)) {
    for (const [node, instanceId] of Object.entries(nodes ?? {})) {
      const planned = plan.nodes.find((n) => n.name === node);
      if (!planned) problems.push(`${node}: not a node of the plan`);
      else if (planned.awsRegion !== region) problems.push(`${node}: listed under ${region}, planned in ${planned.awsRegion}`);
      else if (!/^i-[0-9a-f]{8,17}$/.test(instanceId)) problems.push(`${node}: ${JSON.stringify(instanceId)} is not an instance id`);
      else targets[node] = { instanceId, region };
    }
  }
  for (const node of plan.nodes) if (!targets[node.name] && !problems.some((p) => p.startsWith(`${node.name}:`))) problems.push(`${node.name}: no instance given`);
  if (problems.length) throw new Error(`--region-instances does not match the plan:\n  ${problems.join("\n  ")}`);
  return targets;
}

/**
 * ClusterAccess for a real stack. There is no client namespace: each HAProxy
 * node probes its own ports (no security-group rule needed) by TLS
 * certificate identity, since no node outside the database tier holds the
 * superuser password (and SSM Run Command must never carry it).
 */
export function awsAccess(plan: ClusterPlan, transport: NodeTransport): ClusterAccess {
  const haproxies = nodesWithRole(plan, "haproxy");
  const client = haproxies[0]?.name ?? nodesWithRole(plan, "postgres")[0]?.name;
  if (!client) throw new Error("the plan has no node to probe from");
  return {
    plan,
    transport,
    client,
    superuserPassword: "",
    clientFiles: { caCert: NODE_PATHS.caCert, foreignCert: "", foreignKey: "" },
    isolated: new Set(),
    haproxyProbe: "certificate",
    clientFor: (haproxy) => haproxy,
    // Each node reads its own parameters from SSM with its instance role.
    secretSource: { args: [] },
  };
}

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError("must be a positive number of seconds");
  return n;
}

function regionInstancesArg(value: string): RegionInstances {
  try {
    const parsed = JSON.parse(value) as unknown;
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    return parsed as RegionInstances;
  } catch (error) {
    throw new InvalidArgumentError(`not JSON of {region: {node: instanceId}}: ${(error as Error).message}`);
  }
}

interface CommonOptions {
  stack: string;
  regionInstances: RegionInstances;
  timeout: number;
  poll: number;
}

function setup(options: CommonOptions, log: (line: string) => void): ClusterAccess {
  // The SDK is pinned (package.json); its notice about future releases needing Node 22 would only clutter `pulumi up`.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const text = process.env.PGHA_CONFIG;
  if (!text) throw new Error("PGHA_CONFIG (the stack's pgha configuration as JSON) is not set");
  const plan = buildClusterPlan(JSON.parse(text), { stack: options.stack });
  const targets = targetsFromRegionInstances(plan, options.regionInstances);
  const transport = new SsmTransport({ targets, comment: `pgha ${options.stack} readiness`, log });
  return awsAccess(plan, transport);
}

function logger(what: string): (line: string) => void {
  const started = Date.now();
  return (line) => void process.stdout.write(`[pgha ${what} +${Math.round((Date.now() - started) / 1000)}s] ${line}\n`);
}

function skipped(what: string): boolean {
  if (process.env.PGHA_SKIP_READINESS !== "1") return false;
  process.stdout.write(`[pgha ${what}] SKIPPED: PGHA_SKIP_READINESS=1 — this update proves nothing about the cluster\n`);
  return true;
}

export function program(): Command {
  const cli = new Command();
  cli.name("readiness").description("Readiness gate, rolling changes, backups and restores of a pgha stack over SSM Run Command.").exitOverride();
  const common = (command: Command, timeoutDefault: number): Command =>
    command
      .requiredOption("--stack <name>", "Pulumi stack name")
      .requiredOption("--region-instances <json>", "instances as {awsRegion: {node: instanceId}}", regionInstancesArg)
      .option("--timeout <seconds>", "budget for the cluster to become ready (rollout: per step)", positiveSeconds, timeoutDefault)
      .option("--poll <seconds>", "delay between check rounds", positiveSeconds, 10);

  common(cli.command("gate").description("wait until the cluster is ready; fail naming each failing check and node"), 1200).action(async (options: CommonOptions) => {
    if (skipped("gate")) return;
    const log = logger("gate");
    const access = setup(options, log);
    log(
      `waiting up to ${options.timeout} s for ${access.plan.nodes.length} nodes: one leader, ${access.plan.config.patroni.synchronousNodeCount} sync standby(s), streaming within ${access.plan.config.patroni.maximumLagOnFailover} B, etcd healthy, every HAProxy port on the right member`,
    );
    await waitUntilReady(access, { budgetMs: options.timeout * 1000, pollMs: options.poll * 1000, log, live: true });
  });

  common(cli.command("rollout").description("apply Patroni dynamic settings and node-local files one node at a time, each step gated"), 600).action(
    async (options: CommonOptions) => {
      if (skipped("rollout")) return;
      const log = logger("rollout");
      const access = setup(options, log);
      await runRollout({ access, log, healthBudgetMs: options.timeout * 1000, pollMs: options.poll * 1000 });
    },
  );

  common(cli.command("backup").description("take a backup now on the primary (pgha-backup-<type>.service, the timers' own unit) into every repository"), 600)
    .option("--type <type>", "full or diff", asArgument(backupType), "full" as const)
    .action(async (options: CommonOptions & { type: ReturnType<typeof backupType> }) => {
      const log = logger("backup");
      const report = await takeBackup(setup(options, log), options.type);
      log(`${report.node}: ${options.type} backup to every repository in ${report.seconds.toFixed(1)} s`);
    });

  common(
    cli
      .command("restore")
      .description(
        "restore the whole cluster in place from the backup repositories, to --target-time or to the end of the archive; nothing changes unless the first node's restore promotes",
      ),
    1800,
  )
    .option(
      "--target-time <timestamp>",
      "recover to just before the first commit after this instant (with a time zone, e.g. '2026-12-02 10:15:00+00')",
      asArgument(checkTargetTime),
    )
    .option("--node <name>", "the node that restores first and leads (default: the highest failover_priority)")
    .action(async (options: CommonOptions & { targetTime?: string; node?: string }) => {
      const log = logger("restore");
      const report = await restoreCluster(setup(options, log), { targetTime: options.targetTime, node: options.node, log, healthBudgetMs: options.timeout * 1000 });
      log(`restored in ${report.seconds.total.toFixed(1)} s (the leader's own restore ${report.seconds.leaderRestore.toFixed(1)} s); leader ${report.leader}`);
    });

  common(cli.command("rebuild-replica").description("re-create one member from its region's repository (patronictl reinit: pgbackrest first, then basebackup)"), 1800)
    .argument("<member>", "the member to rebuild (not the leader)")
    .action(async (member: string, options: CommonOptions) => {
      const log = logger("rebuild-replica");
      const report = await rebuildReplica(setup(options, log), member, { log, healthBudgetMs: options.timeout * 1000 });
      log(`${member} rebuilt with ${report.method} in ${report.seconds.toFixed(1)} s`);
    });
  return cli;
}

/** A checker from ops/restore.ts as a commander argument parser: its one-line error becomes commander's. */
function asArgument<T>(check: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return check(value);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

if (require.main === module) {
  program()
    .parseAsync(process.argv)
    .catch((caught: unknown) => {
      const error = caught as Error & { code?: string; exitCode?: number };
      if (error.code?.startsWith("commander.")) {
        process.exitCode = error.exitCode ?? 2;
        return;
      }
      process.stderr.write(`pgha readiness FAILED: ${error.message}\n`);
      process.exitCode = 1;
    });
}
