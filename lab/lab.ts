import * as fs from "node:fs";
import * as path from "node:path";
import { buildClusterPlan, type ClusterPlan } from "../plan";
import { bootCluster, prepareClient, prepareRoot, type Logger, type NodeBootRecord } from "./boot";
import { cleanupLab, leftoversExist, type CleanupReport } from "./cleanup";
import type { ClusterAccess } from "../checks/cluster";
import { exec } from "./exec";
import { CLIENT, DEFAULT_STATE_DIR, hostLayout, labLayout, ROUTER_NS, type LabLayout } from "./layout";
import { createNetwork } from "./netns";
import { checkIssued, issuePki, writeParameterDirs } from "./pki";
import { LabTransport } from "./transport";
import { startWan, type WanOptions, type WanSpec } from "./wan";
import { acquireLabLock } from "./lock";

export const LAB_STACK = "lab";

/** Client-side paths of the lab-only files (see prepareClient). */
export const CLIENT_FILES = {
  caCert: "/etc/pgha-lab/ca.crt",
  foreignCert: "/etc/pgha-lab/foreign-client.crt",
  foreignKey: "/etc/pgha-lab/foreign-client.key",
  writer: "/etc/pgha-lab/writer.py",
};

export interface LabContext {
  plan: ClusterPlan;
  layout: LabLayout;
  transport: LabTransport;
  access: ClusterAccess;
}

export function labPlan(): ClusterPlan {
  return buildClusterPlan(undefined, { stack: LAB_STACK });
}

/** Fails with a clear message when the lab cannot run here (not root, no rootfs). */
/** Root, the lab lock (held until this process exits), and the rootfs; returns the rootfs path. */
export async function preflight(): Promise<string> {
  if (typeof process.getuid === "function" && process.getuid() !== 0) throw new Error("the lab needs root (network namespaces, mounts, chroot): run it as root");
  acquireLabLock(path.relative(process.cwd(), process.argv[1] ?? "lab") || "lab");
  if (process.env.PGHA_ROOTFS) {
    if (!fs.existsSync(path.join(process.env.PGHA_ROOTFS, ".pgha-complete")))
      throw new Error(`PGHA_ROOTFS=${process.env.PGHA_ROOTFS} is not a complete rootfs (no .pgha-complete)`);
    return process.env.PGHA_ROOTFS;
  }
  const script = path.join(__dirname, "build-rootfs.sh");
  const result = await exec(["bash", script, "--check"]);
  if (result.code !== 0) throw new Error(`the lab's Debian 13 rootfs is missing: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

export function labContext(stateDir = DEFAULT_STATE_DIR): LabContext {
  const plan = labPlan();
  const layout = labLayout(plan, stateDir);
  const transport = new LabTransport(layout);
  let superuserPassword: string;
  try {
    const passwords = JSON.parse(fs.readFileSync(path.join(layout.pkiDir, "passwords.json"), "utf8")) as Record<string, string>;
    superuserPassword = passwords.superuser ?? "";
  } catch {
    superuserPassword = "";
  }
  const access: ClusterAccess = {
    plan,
    transport,
    client: CLIENT,
    superuserPassword,
    clientFiles: { caCert: CLIENT_FILES.caCert, foreignCert: CLIENT_FILES.foreignCert, foreignKey: CLIENT_FILES.foreignKey },
    isolated: new Set(),
  };
  return { plan, layout, transport, access };
}

export interface UpResult {
  rootfs: string;
  timings: Record<string, number>;
  boot: NodeBootRecord[];
  pkiProblems: string[];
  /** The WAN emulator's settings when it is on. */
  wan?: WanSpec;
}

export interface UpOptions {
  /** Turn the WAN emulator on (lab/wan.ts): inter-region packets delayed by the plan's RTTs. */
  wan?: WanOptions;
}

/** Builds the whole lab and boots every node from its rendered user-data. */
export async function labUp(stateDir: string, log: Logger, options: UpOptions = {}): Promise<UpResult> {
  const rootfs = await preflight();
  const timings: Record<string, number> = {};
  const t0 = Date.now();
  const plan = labPlan();
  const layout = labLayout(plan, stateDir);
  await resetState(stateDir, layout, rootfs, log);

  let t = Date.now();
  const client = hostLayout(layout, CLIENT);
  const pki = await issuePki(plan, layout.pkiDir, client.link.address);
  const pkiProblems = await checkIssued(plan, pki);
  if (pkiProblems.length) throw new Error(`issued certificates do not match the plan:\n  ${pkiProblems.join("\n  ")}`);
  const paramsDirs = writeParameterDirs(plan, pki, layout.paramsDir);
  timings.pkiSeconds = (Date.now() - t) / 1000;
  log(`PKI: CA and ${plan.certificates.length} certificates issued (${timings.pkiSeconds.toFixed(1)} s)`);

  t = Date.now();
  await createNetwork(layout);
  timings.networkSeconds = (Date.now() - t) / 1000;
  log(`network: router + ${layout.hosts.length} host namespaces (${timings.networkSeconds.toFixed(1)} s)`);
  let wan: WanSpec | undefined;
  if (options.wan) {
    t = Date.now();
    wan = await startWan(plan, layout, rootfs, options.wan, log);
    timings.wanSeconds = (Date.now() - t) / 1000;
  }

  t = Date.now();
  await Promise.all(layout.hosts.map((host) => prepareRoot(host, rootfs)));
  prepareClient(client, { caCert: pki.caCert, foreignCa: pki.foreign.caCert, foreignCert: pki.foreign.cert, foreignKey: pki.foreign.key });
  timings.rootsSeconds = (Date.now() - t) / 1000;
  log(`roots: ${layout.hosts.length} overlays with /proc, /dev, /dev/shm, /run, /tmp (${timings.rootsSeconds.toFixed(1)} s)`);

  t = Date.now();
  const transport = new LabTransport(layout);
  const boot = await bootCluster({ plan, layout, transport, rootfs, paramsDirs, log });
  timings.bootSeconds = (Date.now() - t) / 1000;
  timings.upSeconds = (Date.now() - t0) / 1000;
  fs.writeFileSync(path.join(stateDir, "boot.json"), JSON.stringify(boot, null, 2));
  return { rootfs, timings, boot, pkiProblems, wan };
}

/** Removes whatever an earlier lab left, then records the new one in the state file. */
async function resetState(stateDir: string, layout: LabLayout, rootfs: string, log: Logger): Promise<void> {
  const owned = labNamespaceNames(layout);
  if (await leftoversExist(stateDir, owned)) {
    log("cleaning up the previous lab first");
    const report = await cleanupLab(stateDir, owned, log);
    if (report.problems.length) throw new Error(`cleanup left things behind: ${report.problems.join("; ")}`);
  }
  for (const dir of [path.join(stateDir, "hosts"), path.join(stateDir, "router"), layout.wanFile, layout.pkiDir, layout.paramsDir])
    fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(layout.stateFile, JSON.stringify({ rootfs, startedAt: new Date().toISOString(), pid: process.pid, namespaces: owned }, null, 2));
}

/**
 * Only the network, the host roots and (optionally) the WAN emulator: no PKI,
 * no services. The WAN emulator's own test (tests/lab/wan.test.ts) runs on
 * it; `down` removes it like a full lab.
 */
export async function labNetworkUp(stateDir: string, log: Logger, options: UpOptions = {}): Promise<{ rootfs: string; layout: LabLayout; plan: ClusterPlan; wan?: WanSpec }> {
  const rootfs = await preflight();
  const plan = labPlan();
  const layout = labLayout(plan, stateDir);
  await resetState(stateDir, layout, rootfs, log);
  await createNetwork(layout);
  const wan = options.wan ? await startWan(plan, layout, rootfs, options.wan, log) : undefined;
  await Promise.all(layout.hosts.map((host) => prepareRoot(host, rootfs)));
  return { rootfs, layout, plan, wan };
}

/** The namespaces this lab creates (and the only ones `down` removes). */
export function labNamespaceNames(layout: LabLayout): string[] {
  return [ROUTER_NS, ...layout.hosts.map((host) => host.ns)];
}

export async function labDown(stateDir: string, log: Logger): Promise<CleanupReport> {
  return cleanupLab(stateDir, labNamespaceNames(labLayout(labPlan(), stateDir)), log);
}
