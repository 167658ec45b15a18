import * as fs from "node:fs";
import * as path from "node:path";
import { NODE_PATHS, type ClusterPlan } from "../plan";
import { renderUserData } from "../cloud-init/user-data";
import { sleep, tailOf } from "./exec";
import type { HostLayout, LabLayout } from "./layout";
import { hostLayout } from "./layout";
import { mkdirInRoot, mountRoot, readAccounts, replayTmpfiles, resolveInRoot, writeFileInRoot } from "./roots";
import { installSupervisor, resolveService, serviceLog, serviceStatus, startService } from "./services";
import type { LabTransport } from "./transport";
import { classifyStep, parseUserData, type BootStep, type ParsedUserData } from "./userdata";

export type Logger = (line: string) => void;

export interface NodeBootRecord {
  node: string;
  files: number;
  steps: { argv: string[]; lab: string; ms: number }[];
  notReplayed: string[];
  ignoredUnitDirectives: Record<string, string[]>;
  notes: string[];
}

/** Where a node's own parameters are staged for `pgha-fetch-secrets --from-dir` (in its tmpfs /run, only while needed). */
export const LAB_PARAMS = "/run/pgha-lab/params";

/** Copies only this node's parameters into the node (as its instance role only reaches `<path>/*`); returns the removal. */
export function stageParameters(host: HostLayout, paramsDir: string): () => void {
  const inside = mkdirInRoot(host.root, LAB_PARAMS);
  fs.cpSync(paramsDir, inside, { recursive: true });
  return () => {
    fs.rmSync(inside, { recursive: true, force: true });
  };
}

/** Prepares a host root: overlay, /proc, /dev, /dev/shm, /run, /tmp, the tmpfiles.d directories and the supervisor. */
export async function prepareRoot(host: HostLayout, rootfs: string): Promise<void> {
  await mountRoot(host, rootfs);
  replayTmpfiles(host.root, readAccounts(host.root));
  installSupervisor(host);
}

async function inRoot(transport: LabTransport, host: HostLayout, argv: string[], timeoutMs = 120_000): Promise<void> {
  const result = await transport.run(host.name, argv, { timeoutMs });
  if (result.code !== 0) throw new Error(`${host.name}: ${argv.join(" ")} failed (exit ${result.code}):\n${(result.stderr || result.stdout).trim()}`);
}

/** write_files, exactly as rendered: non-deferred entries first, deferred ones after the accounts exist. */
async function writeFiles(transport: LabTransport, host: HostLayout, userData: ParsedUserData, record: NodeBootRecord): Promise<void> {
  for (const file of userData.writeFiles.filter((f) => !f.defer)) writeFileInRoot(host.root, readAccounts(host.root), file);
  for (const user of userData.users) {
    if (readAccounts(host.root).users.has(user.name)) continue;
    const argv = [
      "useradd",
      ...(user.system ? ["--system"] : []),
      ...(user.homedir ? ["--home-dir", user.homedir, "--no-create-home"] : []),
      ...(user.shell ? ["--shell", user.shell] : []),
      user.name,
    ];
    await inRoot(transport, host, argv);
    record.notes.push(`created account ${user.name} (users:)`);
  }
  const accounts = readAccounts(host.root);
  for (const file of userData.writeFiles.filter((f) => f.defer)) writeFileInRoot(host.root, accounts, file);
  record.files = userData.writeFiles.length;
}

/**
 * What the lab's Debian 13 rootfs really carries where it differs from the
 * stack's pins: Debian's Patroni 4.0 (PGDG's 4.1 is for Ubuntu), and
 * Debian's etcd of the plan's minor (pgha-install-etcd's replay checks the
 * minor). PostgreSQL 17 is the plan's own.
 */
export const LAB_ROOTFS_PATRONI = "4.0.*";

/**
 * The version check's argv with the lab rootfs's versions in place of the
 * plan's (see {@link LAB_ROOTFS_PATRONI}; etcd: the plan's major.minor, any
 * patch release). Everything else, --hold included, is the plan's.
 */
export function labVersionCheck(argv: readonly string[]): string[] {
  return argv.map((arg, index) => {
    if (argv[index - 1] === "--patroni") return LAB_ROOTFS_PATRONI;
    if (argv[index - 1] === "--etcd") return `${arg.split(".").slice(0, 2).join(".")}.*`;
    return arg;
  });
}

/** The argv without its `--hold UNIT` pairs: a check that only reports. */
function withoutHolds(argv: readonly string[]): string[] {
  return argv.filter((arg, index) => arg !== "--hold" && argv[index - 1] !== "--hold");
}

/** The lab's stand-in for one runcmd step that is not a service start. */
async function replayStep(transport: LabTransport, host: HostLayout, step: BootStep, paramsDir: string | undefined, record: NodeBootRecord): Promise<string> {
  switch (step.kind) {
    case "install-etcd": {
      // No download in the lab: the rootfs's Debian etcd stands in for the release archive.
      for (const tool of ["etcd", "etcdctl", "etcdutl"]) {
        const link = resolveInRoot(host.root, `/usr/local/bin/${tool}`);
        fs.mkdirSync(path.dirname(link), { recursive: true });
        fs.rmSync(link, { force: true });
        fs.symlinkSync(`/usr/bin/${tool}`, link);
      }
      const version = await transport.run(host.name, [NODE_PATHS.etcdBinary, "--version"]);
      const got = /etcd Version: (\S+)/.exec(version.stdout)?.[1] ?? "?";
      const wanted = step.argv[1] ?? "?";
      if (got.split(".").slice(0, 2).join(".") !== wanted.split(".").slice(0, 2).join(".")) throw new Error(`${host.name}: the rootfs has etcd ${got}, the plan wants ${wanted}`);
      if (got !== wanted) record.notes.push(`etcd ${got} from the rootfs stands in for ${wanted}`);
      return `linked /usr/local/bin/etcd{,ctl,utl} to the rootfs's etcd ${got}`;
    }
    case "check-versions": {
      // The real script, twice: with the plan's pins, only reporting (on this
      // rootfs it refuses Patroni 4.0 and Debian's etcd; the refusal is kept as
      // notes), then with the rootfs's versions and the plan's holds, which
      // must pass for the boot to go on.
      const asPlanned = await transport.run(host.name, withoutHolds(step.argv));
      if (asPlanned.code === 1) for (const line of asPlanned.stderr.trim().split("\n")) record.notes.push(`plan's version check: ${line}`);
      else if (asPlanned.code !== 0) throw new Error(`${host.name}: ${step.argv[0]} failed to run (exit ${asPlanned.code}): ${asPlanned.stderr.trim()}`);
      const lab = labVersionCheck(step.argv);
      await inRoot(transport, host, lab);
      return `ran with the lab rootfs's versions: ${lab.slice(1).join(" ")}`;
    }
    case "prepare-data-volume": {
      const mountPoint = step.argv[2] ?? "/var/lib/postgresql";
      await inRoot(transport, host, ["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", mountPoint]);
      return `created ${mountPoint} (postgres, 0700) instead of formatting a volume`;
    }
    case "fetch-secrets": {
      if (!paramsDir) throw new Error(`${host.name}: no parameter directory for this node`);
      const unstage = stageParameters(host, paramsDir);
      try {
        await inRoot(transport, host, [...step.argv, "--from-dir", LAB_PARAMS]);
      } finally {
        unstage();
      }
      return `ran with --from-dir ${LAB_PARAMS}`;
    }
    case "daemon-reload":
      return "no-op: the lab reads unit files at start";
    case "enable":
      return `no-op: ${step.units.join(" ")} started by the replay`;
    case "command":
      await inRoot(transport, host, step.argv);
      return "ran in the node";
    case "start":
      throw new Error("internal: start steps are replayed by bootCluster");
  }
}

export interface BootOptions {
  plan: ClusterPlan;
  layout: LabLayout;
  transport: LabTransport;
  rootfs: string;
  paramsDirs: Map<string, string>;
  log: Logger;
  /** Per-unit readiness budget (systemd's TimeoutStartSec). */
  startTimeoutMs?: number;
}

async function waitReady(host: HostLayout, unit: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = serviceStatus(host, unit);
    // "exited" and ready: a Type=oneshot unit that finished successfully (systemd's "active (exited)").
    if (status?.ready && (status.state === "running" || status.state === "exited")) return;
    if (status && (status.state === "failed" || status.state === "exited")) break;
    await sleep(200);
  }
  throw new Error(
    `${host.name}: ${unit} did not become ready within ${timeoutMs / 1000} s (state ${serviceStatus(host, unit)?.state ?? "?"}); last log lines:\n${tailOf(serviceLog(host, unit))}`,
  );
}

/**
 * Replays every node's user-data in parallel, step by step: roots and files,
 * then the runcmd steps up to the services, then the service starts grouped
 * by unit in the order they first appear (etcd everywhere, then Patroni,
 * then HAProxy), each group waited on like `systemctl restart` waits for
 * Type=notify readiness.
 */
export async function bootCluster(options: BootOptions): Promise<NodeBootRecord[]> {
  const { plan, layout, transport, log } = options;
  const startTimeoutMs = options.startTimeoutMs ?? 90_000;
  const records = new Map<string, NodeBootRecord>();
  const pending = new Map<string, BootStep[]>();
  await Promise.all(
    plan.nodes.map(async (node) => {
      const host = hostLayout(layout, node.name);
      const record: NodeBootRecord = { node: node.name, files: 0, steps: [], notReplayed: [], ignoredUnitDirectives: {}, notes: [] };
      records.set(node.name, record);
      const text = renderUserData(plan, node.name, {});
      fs.writeFileSync(path.join(host.logDir, "..", "user-data.yaml"), text);
      const userData = parseUserData(text);
      record.notReplayed = userData.notReplayed;
      await writeFiles(transport, host, userData, record);
      const steps = userData.runcmd.flatMap((argv) => classifyStep(argv, NODE_PATHS));
      const firstStart = steps.findIndex((s) => s.kind === "start");
      const before = firstStart < 0 ? steps : steps.slice(0, firstStart);
      for (const step of before) {
        const t = Date.now();
        const lab = await replayStep(transport, host, step, options.paramsDirs.get(node.name), record);
        record.steps.push({ argv: step.argv, lab, ms: Date.now() - t });
      }
      pending.set(node.name, firstStart < 0 ? [] : steps.slice(firstStart));
      log(`${node.name}: ${record.files} files written, ${before.length} boot steps replayed`);
    }),
  );
  // Units in order of first appearance across the nodes, in plan order.
  const order: string[] = [];
  for (const node of plan.nodes) for (const step of pending.get(node.name) ?? []) if (step.kind === "start" && !order.includes(step.unit)) order.push(step.unit);
  for (const unit of order) {
    const group = plan.nodes.filter((node) => (pending.get(node.name) ?? []).some((s) => s.kind === "start" && s.unit === unit));
    const t = Date.now();
    await Promise.all(
      group.map(async (node) => {
        const host = hostLayout(layout, node.name);
        const record = records.get(node.name) as NodeBootRecord;
        const steps = pending.get(node.name) as BootStep[];
        // Replay everything up to and including this unit's start.
        while (steps.length) {
          const step = steps.shift() as BootStep;
          const s = Date.now();
          if (step.kind === "start") {
            const spec = resolveService(host, step.unit);
            if (spec.ignored.length) record.ignoredUnitDirectives[step.unit] = spec.ignored;
            await startService(host, step.unit);
            record.steps.push({ argv: step.argv, lab: `supervised start of ${step.unit} as ${spec.user}`, ms: Date.now() - s });
            if (step.unit === unit) break;
          } else {
            const lab = await replayStep(transport, host, step, options.paramsDirs.get(node.name), record);
            record.steps.push({ argv: step.argv, lab, ms: Date.now() - s });
          }
        }
      }),
    );
    await Promise.all(group.map((node) => waitReady(hostLayout(layout, node.name), unit, startTimeoutMs)));
    log(`${unit}: started and ready on ${group.map((n) => n.name).join(", ")} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  for (const node of plan.nodes) {
    const rest = pending.get(node.name) ?? [];
    const host = hostLayout(layout, node.name);
    for (const step of rest) {
      const record = records.get(node.name) as NodeBootRecord;
      if (step.kind === "start") await startService(host, step.unit);
      else record.steps.push({ argv: step.argv, lab: await replayStep(transport, host, step, options.paramsDirs.get(node.name), record), ms: 0 });
    }
  }
  return [...records.values()];
}

/** Lab-only files for the client host: the cluster CA, a foreign CA's client certificate, the writer. */
export function prepareClient(client: HostLayout, files: { caCert: string; foreignCert: string; foreignKey: string; foreignCa: string }): void {
  const dir = mkdirInRoot(client.root, "/etc/pgha-lab");
  fs.copyFileSync(files.caCert, path.join(dir, "ca.crt"));
  fs.copyFileSync(files.foreignCa, path.join(dir, "foreign-ca.crt"));
  fs.copyFileSync(files.foreignCert, path.join(dir, "foreign-client.crt"));
  fs.copyFileSync(files.foreignKey, path.join(dir, "foreign-client.key"));
  fs.chmodSync(path.join(dir, "foreign-client.key"), 0o600);
  fs.copyFileSync(path.join(__dirname, "assets", "writer.py"), path.join(dir, "writer.py"));
}
