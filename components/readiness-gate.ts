import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import type { ClusterPlan } from "../plan";
import { canonicalJson, dynamicSettingsHash } from "../ops/dynamic-config";
import { nodeFilesHash } from "../ops/node-files";
import { certificatesHash } from "../ops/node-secrets";
import { shellQuote } from "../ops/shell";
import { TYPE_PREFIX } from "./naming";

/** Arguments of {@link ReadinessGate}. */
export interface ReadinessGateArgs {
  /** The validated plan: its config goes to the script as PGHA_CONFIG. */
  plan: ClusterPlan;
  /** Instance id of every node of the plan, by node name. */
  instanceIds: Record<string, pulumi.Input<string>>;
  /** What must exist before the gate runs: the node components (instances, data volume attachments). */
  nodes: pulumi.Resource[];
  /**
   * Every certificate PEM the nodes hold (the CA and each leaf, by id): their
   * hash is a trigger of the rollout, so a renewal reaches the nodes.
   */
  certificatePems: Record<string, pulumi.Input<string>>;
  /** The nodes' SSM parameters (NodeSecrets components): the rollout fetches only after they hold the new values. */
  secrets: pulumi.Resource[];
  /** Budget for the cluster to become ready (default 1200 s: a first boot installs packages and clones replicas). */
  gateTimeoutSeconds?: number;
  /** Budget per rollout step (default 600 s). */
  stepTimeoutSeconds?: number;
}

/**
 * The script both Commands run, relative to the directory `pulumi up` runs
 * in (the Command provider's working directory): `ops/readiness.ts` (through
 * tsx) in this project; `node_modules/<package>/dist/ops/readiness.js` (plain
 * node) in a program that installed the npm package — the part of this
 * module's own path from its last `node_modules` on, which also holds for a
 * scoped name or pnpm's symlinked layout. Derived from this module's location
 * alone, not from the working directory, so the command line (and with it
 * `pulumi preview`) is the same on every machine, checkout and cwd.
 */
export const READINESS_SCRIPT = readinessScript();

function readinessScript(): string {
  const extension = path.extname(__filename);
  const script = path.join(__dirname, "..", "ops", `readiness${extension}`);
  const parts = script.split(path.sep);
  const installed = parts.lastIndexOf("node_modules");
  if (installed >= 0) return parts.slice(installed).join("/");
  // This repository (sources at its root, or a build in its dist/): relative to the root.
  const root = extension === ".ts" ? path.join(__dirname, "..") : path.join(__dirname, "..", "..");
  return path.relative(root, script).split(path.sep).join("/");
}

/** `{ awsRegion: { node: instanceId } }` in plan order. */
export function regionInstances(plan: ClusterPlan, ids: Record<string, string>): Record<string, Record<string, string>> {
  const byRegion: Record<string, Record<string, string>> = {};
  for (const node of plan.nodes) {
    const id = ids[node.name];
    if (id === undefined) throw new Error(`ReadinessGate: no instance id for ${node.name}`);
    (byRegion[node.awsRegion] ??= {})[node.name] = id;
  }
  return byRegion;
}

/** The shell command line of one mode (`gate` or `rollout`). */
export function readinessCommandLine(mode: "gate" | "rollout", stack: string, instances: Record<string, Record<string, string>>, timeoutSeconds: number): string {
  return [
    "node",
    // The sources need tsx's loader; the package's compiled script does not.
    ...(READINESS_SCRIPT.endsWith(".ts") ? ["--import", "tsx"] : []),
    READINESS_SCRIPT,
    mode,
    "--stack",
    shellQuote(stack),
    "--region-instances",
    shellQuote(JSON.stringify(instances)),
    "--timeout",
    String(timeoutSeconds),
  ].join(" ");
}

/**
 * `pulumi up` that means "the cluster works". Two local Commands, run on the
 * machine that runs `pulumi up`, after the nodes exist:
 *
 * - `<name>-gate` waits (bounded, printing what still fails) until the
 *   cluster is ready — one leader, the configured number of sync standbys,
 *   every member streaming within maximum_lag_on_failover, etcd healthy on
 *   every member, every HAProxy port answered by the right member — or fails
 *   the update naming each failing check and node. It runs when created and
 *   whenever its inputs change: an instance replaced, any `pgha:` setting.
 * - `<name>-rollout`, after the gate, applies Patroni's dynamic settings and
 *   the node-local files and the node secrets one node at a time
 *   (ops/rollout.ts). Its `triggers` are the hash of the dynamic settings,
 *   the hash of every rendered node file and the hash of every certificate,
 *   so a changed setting or a renewed certificate shows in `pulumi preview`
 *   as an update of this resource with the new hash. It runs after the SSM
 *   parameters are updated.
 *
 * Both reach the nodes only through SSM Run Command (ops/ssm-transport.ts)
 * with the credentials of `pulumi up`; no port is opened. Command resources
 * run nothing during `pulumi preview`: preview shows the diff only. The
 * `update` command equals `create`, so a change is an in-place update, not a
 * replacement, and nothing runs on delete.
 */
export class ReadinessGate extends pulumi.ComponentResource {
  public readonly gate: command.local.Command;
  public readonly rollout: command.local.Command;
  /** Hash of Patroni's dynamic settings in the plan (a trigger of the rollout). */
  public readonly dynamicSettingsHash: string;
  /** Hash of every node's rendered files, owners and modes (a trigger of the rollout). */
  public readonly nodeFilesHash: string;
  /** Hash of every certificate PEM (a trigger of the rollout; certificates are public, keys and passwords are not in it). */
  public readonly certificatesHash: pulumi.Output<string>;

  constructor(name: string, args: ReadinessGateArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:ReadinessGate`, name, {}, opts);
    const { plan } = args;
    const missing = plan.nodes.filter((n) => args.instanceIds[n.name] === undefined).map((n) => n.name);
    if (missing.length) throw new Error(`ReadinessGate: no instance id for ${missing.join(", ")}`);
    const gateTimeout = args.gateTimeoutSeconds ?? 1200;
    const stepTimeout = args.stepTimeoutSeconds ?? 600;
    this.dynamicSettingsHash = dynamicSettingsHash(plan);
    this.nodeFilesHash = nodeFilesHash(plan);
    this.certificatesHash = pulumi.all(args.certificatePems).apply((pems) => certificatesHash(pems));

    const instances = pulumi.all(args.instanceIds).apply((ids) => regionInstances(plan, ids));
    const environment = { PGHA_CONFIG: canonicalJson(plan.config) };
    const gateLine = instances.apply((byRegion) => readinessCommandLine("gate", plan.stack, byRegion, gateTimeout));
    const rolloutLine = instances.apply((byRegion) => readinessCommandLine("rollout", plan.stack, byRegion, stepTimeout));

    this.gate = new command.local.Command(
      `${name}-gate`,
      { create: gateLine, update: gateLine, environment, addPreviousOutputInEnv: false },
      { parent: this, dependsOn: args.nodes },
    );
    this.rollout = new command.local.Command(
      `${name}-rollout`,
      {
        create: rolloutLine,
        update: rolloutLine,
        environment,
        triggers: [this.dynamicSettingsHash, this.nodeFilesHash, this.certificatesHash],
        addPreviousOutputInEnv: false,
      },
      { parent: this, dependsOn: [this.gate, ...args.secrets] },
    );
    this.registerOutputs({ dynamicSettingsHash: this.dynamicSettingsHash, nodeFilesHash: this.nodeFilesHash, certificatesHash: this.certificatesHash });
  }
}
