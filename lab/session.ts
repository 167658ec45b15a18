import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import { NODE_PATHS, nodesWithRole, type ClusterPlan } from "../plan";
import { parseEnvironmentFile } from "../checks/env-file";
import type { ClusterAccess } from "../checks/cluster";
import type { NodeTransport, RunOptions } from "../checks/transport";
import { labContext, labNamespaceNames, type LabContext } from "./lab";
import { CLIENT, hostLayout } from "./layout";
import { existingNamespaces } from "./netns";
import type { LabTransport } from "./transport";

/**
 * `lab psql`, `lab exec` and `lab logs`: a running lab at hand for people
 * trying it. They only read the lab's state and go through the transport, so
 * they take no lab lock: they are meant for use beside a running session
 * (and the lab test, which holds the lock, runs them).
 */

/** A lab that `up` built and that is still there (its state file and every namespace); else one line saying so. */
export async function requireUp(stateDir: string): Promise<LabContext> {
  const lab = labContext(stateDir);
  const present = new Set(await existingNamespaces());
  const missing = labNamespaceNames(lab.layout).filter((ns) => !present.has(ns));
  if (!fs.existsSync(lab.layout.stateFile) || missing.length) {
    throw new Error(`the lab is not up${missing.length ? ` (missing namespaces: ${missing.join(", ")})` : ""}: run \`npm run lab -- up\``);
  }
  return lab;
}

function requireRoot(): void {
  // As another user the state dir (0700) reads as empty and every lab would look "not up".
  if (typeof process.getuid === "function" && process.getuid() !== 0) throw new Error("the lab's commands need root (network namespaces, chroot): run them as root");
}

// ---- psql --------------------------------------------------------------------------------

/** The application's three endpoints on every HAProxy, as the stack's outputs name them (components/cluster.ts). */
export const PSQL_ROLES = ["writer", "reader", "sync"] as const;
export type PsqlRole = (typeof PSQL_ROLES)[number];

export interface PsqlTarget {
  role: PsqlRole;
  via: string;
  host: string;
  port: number;
}

export function psqlTarget(plan: ClusterPlan, role: string, via: string): PsqlTarget {
  if (!(PSQL_ROLES as readonly string[]).includes(role)) throw new Error(`unknown role ${JSON.stringify(role)} (roles: ${PSQL_ROLES.join(", ")})`);
  const haproxies = nodesWithRole(plan, "haproxy");
  const node = haproxies.find((n) => n.name === via);
  if (!node) throw new Error(`unknown HAProxy node ${JSON.stringify(via)} (HAProxy nodes: ${haproxies.map((n) => n.name).join(", ")})`);
  const { haproxy } = plan.config;
  const port = { writer: haproxy.primaryPort, reader: haproxy.replicaPort, sync: haproxy.synchronousPort }[role as PsqlRole];
  return { role: role as PsqlRole, via, host: node.privateIp, port };
}

/**
 * psql in the client namespace through one HAProxy port, connecting as the
 * drills' writer does (lab/assets/writer.py): superuser, TLS verified against
 * the cluster CA. The connection goes in libpq's variables, so any psql
 * argument (-d, -U, -c, -f ...) still overrides it.
 */
export function psqlCommand(access: ClusterAccess, target: PsqlTarget, args: string[], term: string | undefined): { node: string; argv: string[]; options: RunOptions } {
  const env: Record<string, string> = {
    PGHOST: target.host,
    PGPORT: String(target.port),
    PGUSER: "postgres",
    PGDATABASE: "postgres",
    PGSSLMODE: "verify-ca",
    PGSSLROOTCERT: access.clientFiles.caCert,
    PGAPPNAME: `pgha-lab-psql-${target.role}`,
    PGCONNECT_TIMEOUT: "5",
    PGPASSWORD: access.superuserPassword,
  };
  // The transport clears the environment; an interactive psql wants the terminal's type for readline.
  if (term) env.TERM = term;
  return { node: access.client, argv: ["psql", ...args], options: { env } };
}

// ---- exec --------------------------------------------------------------------------------

/**
 * How a command runs on a node: as root, except the cluster's own tools,
 * which run the way the checks and drills call them (checks/cluster.ts), so
 * `exec NODE -- patronictl list` needs no `-c` and unsafe calls get the REST
 * API password, and `etcdctl` speaks mTLS to the cluster.
 */
export async function execOptions(
  plan: ClusterPlan,
  transport: NodeTransport,
  node: string,
  argv: string[],
  user: string | undefined,
  term: string | undefined,
): Promise<RunOptions> {
  const options: RunOptions = { env: term ? { TERM: term } : {} };
  const tool = path.posix.basename(argv[0] ?? "");
  const roles = plan.nodes.find((n) => n.name === node)?.roles ?? new Set<string>();
  if (tool === "patronictl" && roles.has("postgres")) {
    // patronictl's --config-file default; an explicit -c still wins.
    Object.assign(options.env as Record<string, string>, { PATRONICTL_CONFIG_FILE: NODE_PATHS.patroniConfig });
    options.envFiles = [NODE_PATHS.patroniEnv];
    options.user = "postgres";
  } else if (tool === "etcdctl" && (roles.has("etcd") || roles.has("postgres"))) {
    const env = parseEnvironmentFile(await transport.readFile(node, NODE_PATHS.etcdctlEnv));
    options.envFiles = [NODE_PATHS.etcdctlEnv];
    // The owner of the client key the environment names can read it.
    options.user = plan.certificates.find((c) => c.node === node && c.certPath === env.ETCDCTL_CERT)?.owner ?? "root";
  }
  if (user) options.user = user;
  return options;
}

// ---- logs --------------------------------------------------------------------------------

export interface LogOptions {
  lines: number;
  follow: boolean;
}

export interface UnitLogs {
  /** The node's service units, as `name.service`. */
  units(): Promise<string[]>;
  /** The command, run on the node, that prints (with follow: keeps printing) the logs of these units; of all of them when none is given. */
  command(units: string[], options: LogOptions): string[];
}

/** `patroni` → `patroni.service`; a name with a unit suffix stays as it is. */
export function unitName(name: string): string {
  return /\.(service|socket|timer|target|mount|path)$/.test(name) ? name : `${name}.service`;
}

/** A node's unit logs: its machine's journal. */
export function unitLogs(node: string, transport: NodeTransport): UnitLogs {
  return {
    units: async () => {
      const result = await transport.run(node, ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager", "--type=service"]);
      if (result.code !== 0) throw new Error(`${node}: systemctl list-units failed: ${result.stderr.trim()}`);
      return result.stdout
        .split("\n")
        .map((line) => line.trim().split(/\s+/)[0] ?? "")
        .filter(Boolean)
        .sort();
    },
    command: (units, options) => ["journalctl", "--no-pager", "-n", String(options.lines), ...units.flatMap((unit) => ["-u", unit]), ...(options.follow ? ["-f"] : [])],
  };
}

// ---- running attached ----------------------------------------------------------------------

/**
 * Runs argv with this terminal (stdin, stdout, stderr passed through) and
 * resolves with its exit status (128 + signal when killed). Ctrl-C belongs
 * to the child (psql cancels a query, tail stops), so it is ignored here.
 */
export function runAttached(argv: string[], env: Record<string, string> = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: "inherit", env });
    const ignore = (): void => undefined;
    const forward = (signal: NodeJS.Signals) => (): void => void child.kill(signal);
    const onTerm = forward("SIGTERM");
    const onHup = forward("SIGHUP");
    process.on("SIGINT", ignore);
    process.on("SIGTERM", onTerm);
    process.on("SIGHUP", onHup);
    const done = (): void => {
      process.off("SIGINT", ignore);
      process.off("SIGTERM", onTerm);
      process.off("SIGHUP", onHup);
    };
    child.on("error", (error) => {
      done();
      reject(error);
    });
    child.on("close", (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0));
    });
  });
}

/** Runs argv on a node (or the client) through the transport, attached to this terminal. */
function runOnNode(transport: LabTransport, node: string, argv: string[], options: RunOptions): Promise<number> {
  return runAttached(transport.commandLine(node, argv, options));
}

// ---- the commands --------------------------------------------------------------------------

/** Commands that take no lab lock (see the top of this file). */
export const LOCK_FREE_COMMANDS = ["psql", "exec", "logs"];

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

export function registerSessionCommands(program: Command, stateDir: () => string): void {
  program
    .command("psql")
    .description("psql in the client namespace through one HAProxy (writer :primaryPort, reader :replicaPort, sync :synchronousPort); arguments after -- go to psql")
    .addOption(new Option("--role <role>", "which endpoint").choices(PSQL_ROLES).default("writer"))
    .option("--via <haproxy>", "which HAProxy node", "haproxy-1")
    .argument("[psql-args...]", "passed to psql, e.g. -- -c 'select 1'")
    .action(async (args: string[], options: { role: string; via: string }) => {
      const lab = labContext(stateDir());
      const target = psqlTarget(lab.plan, options.role, options.via);
      requireRoot();
      const up = await requireUp(stateDir());
      const command = psqlCommand(up.access, target, args, process.env.TERM);
      process.exitCode = await runOnNode(up.transport, command.node, command.argv, command.options);
    });

  program
    .command("exec")
    .description("run a command on a node (or the client) through the lab's transport; patronictl and etcdctl run as the drills run them")
    .option("--user <user>", "run as this account of the node (default root; postgres for patronictl)")
    .argument("<node>", "node name, or client")
    .argument("<command...>", "after --: the command and its arguments")
    .action(async (node: string, argv: string[], options: { user?: string }) => {
      // Names first: a typo is reported the same whether or not the lab is up.
      hostLayout(labContext(stateDir()).layout, node);
      requireRoot();
      const up = await requireUp(stateDir());
      const runOptions = await execOptions(up.plan, up.transport, node, argv, options.user, process.env.TERM);
      process.exitCode = await runOnNode(up.transport, node, argv, runOptions);
    });

  program
    .command("logs")
    .description("a node's service logs (all its units, or one)")
    .argument("<node>", "node name")
    .argument("[unit]", "e.g. patroni, etcd, haproxy (default: every unit with logs)")
    .option("-n, --lines <n>", "lines from the end of each log", positiveInt, 100)
    .option("-f, --follow", "keep printing new lines")
    .action(async (node: string, unit: string | undefined, options: { lines: number; follow?: boolean }) => {
      // Names first: a typo is reported the same whether or not the lab is up.
      hostLayout(labContext(stateDir()).layout, node);
      if (node === CLIENT) throw new Error("the client runs no units of the cluster: `logs` takes a node name");
      requireRoot();
      const up = await requireUp(stateDir());
      const logs = unitLogs(node, up.transport);
      const units = await logs.units();
      if (units.length === 0) throw new Error(`${node} has no unit logs yet`);
      const wanted = unit === undefined ? units : [unitName(unit)];
      if (unit !== undefined && !units.includes(unitName(unit))) {
        throw new Error(`no unit ${JSON.stringify(unit)} with logs on ${node} (units: ${units.map((u) => u.replace(/\.service$/, "")).join(", ")})`);
      }
      const code = await runOnNode(up.transport, node, logs.command(wanted, { lines: options.lines, follow: options.follow === true }), {});
      // Ctrl-C is how one stops following: not a failure.
      process.exitCode = options.follow && code === 128 + os.constants.signals.SIGINT ? 0 : code;
    });
}
