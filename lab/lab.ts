import * as fs from "node:fs";
import * as path from "node:path";
import { buildClusterPlan, type ClusterPlan } from "../plan";
import { cleanupLab, leftoversExist, type CleanupReport } from "./cleanup";
import type { ClusterAccess } from "../checks/cluster";
import { exec, sleep } from "./exec";
import { CLIENT, DEFAULT_STATE_DIR, hostLayout, labLayout, ROUTER_NS, type LabLayout } from "./layout";
import { createNetwork } from "./netns";
import { checkIssued, issuePki, parameterRecords } from "./pki";
import { LabTransport } from "./transport";
import { startWan, type WanOptions, type WanSpec } from "./wan";
import { acquireLabLock } from "./lock";
import { labImages, readMirrorInfo, type MirrorInfo } from "./images";
import { INFRA_ADDRESS, INFRA_NS, setEgress, startInfra } from "./infra";
import { bootMachines, replaceMachine, type MachineBootRecord } from "./machines";
import { prepareClient, prepareRoot } from "./roots";

/** Where the lab's progress lines go (the CLI: stderr with a time stamp). */
export type Logger = (line: string) => void;

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

/**
 * The lab's stack configuration: production's defaults, with where packages
 * come from pointed at the lab's mirror (README "The lab and production").
 * Debian 13 carries Patroni 4.0, not PGDG's 4.1 for Ubuntu; its etcd archive
 * is the one the mirror built from Debian's etcd, with that archive's checksum.
 */
export function labConfig(mirror?: MirrorInfo): Record<string, unknown> {
  return {
    // The lab binds the volume before the machine boots; a short wait keeps drill c (no volume) quick.
    // The loop device behind PGDATA is this size, so what the plan derives from the volume (max_slot_wal_keep_size) fits it.
    instances: { os: "debian-13", dataVolumeAttachSeconds: LAB_VOLUME_ATTACH_SECONDS, dataVolumeGiB: LAB_DATA_VOLUME_GIB },
    // Drills judge alerts within seconds of a fault (production scrapes every 15 s).
    // Alerts go to a topic on the lab's moto_server, with a queue subscribed (lab/infra.ts); a resolved alert's
    // message follows within half a minute instead of Alertmanager's default five.
    monitoring: { scrapeIntervalSeconds: LAB_SCRAPE_INTERVAL_SECONDS, alertTopicArn: LAB_ALERT_TOPIC_ARN, groupIntervalSeconds: 30 },
    // The drills wait for WAL to reach the repositories: a segment switch every 10 s (production: 60 s) keeps that short.
    backup: { archiveTimeoutSeconds: LAB_ARCHIVE_TIMEOUT_SECONDS },
    versions: {
      patroni: LAB_PATRONI,
      ...(mirror ? { etcd: mirror.etcd.version, etcdSha256: { amd64: mirror.etcd.sha256 } } : {}),
    },
    packages: {
      repository: { uri: `http://${INFRA_ADDRESS}/pgdg`, suite: "$RELEASE-pgdg", components: ["main"], ...(mirror ? { key: fs.readFileSync(mirror.archiveKey, "utf8") } : {}) },
      etcdReleaseUrl: `http://${INFRA_ADDRESS}/etcd`,
    },
  };
}

/** The lab's Prometheus scrape and rule-evaluation interval: "no leader" fires after 4 s of none (production: 30 s). */
export const LAB_SCRAPE_INTERVAL_SECONDS = 2;

/** PostgreSQL's archive_timeout in the lab. */
export const LAB_ARCHIVE_TIMEOUT_SECONDS = 10;

/** The lab stack's alert topic, in moto's default account. */
export const LAB_ALERT_TOPIC_ARN = "arn:aws:sns:ap-northeast-2:123456789012:pgha-lab-alerts";

/** PGDATA's loop device in the lab (a sparse file; production's default EBS volume is 100 GiB). */
export const LAB_DATA_VOLUME_GIB = 4;

/** How long a lab node's first boot waits for its data volume (production: 600 s). */
export const LAB_VOLUME_ATTACH_SECONDS = 30;

/** Debian 13's Patroni series (PGDG's 4.1 is built for Ubuntu). */
export const LAB_PATRONI = "4.0.*";

/** The lab plan; with the mirror, its etcd version, checksum and archive key are the mirror's. */
export function labPlan(mirror?: MirrorInfo): ClusterPlan {
  return buildClusterPlan(labConfig(mirror), { stack: LAB_STACK });
}

/** The mirror recorded by `up` in this state dir (so `lab psql` and the drills see the plan the machines booted). */
export function recordedMirror(stateDir: string): MirrorInfo | undefined {
  try {
    const state = JSON.parse(fs.readFileSync(path.join(stateDir, "state.json"), "utf8")) as { mirror?: string };
    return state.mirror ? readMirrorInfo(state.mirror) : undefined;
  } catch {
    return undefined;
  }
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
  const plan = labPlan(recordedMirror(stateDir));
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
  /** Each node's boot: cloud-init's verdict, seconds. */
  machines: MachineBootRecord[];
  pkiProblems: string[];
  /** The WAN emulator's settings when it is on. */
  wan?: WanSpec;
}

export interface UpOptions {
  /** Turn the WAN emulator on (lab/wan.ts): inter-region packets delayed by the plan's RTTs. */
  wan?: WanOptions;
  /** Database nodes booted without their data volume (drill c). */
  withoutVolume?: ReadonlySet<string>;
  /**
   * The lab's mirror and SSM endpoint are unreachable from the nodes for this
   * many seconds after the machines start (drill b: the NAT gateway not
   * carrying traffic yet). IMDS stays up, as on EC2.
   */
  egressCutSeconds?: number;
}

/**
 * Builds the whole lab: the network, the lab's cloud (mirror, SSM endpoint,
 * IMDS), then every node booted as a machine (lab/machine.ts: systemd-nspawn,
 * real systemd and cloud-init on the node's own user-data, packages from the
 * lab mirror, secrets from the lab's SSM endpoint, PGDATA on a loop device).
 * Returns once cloud-init has finished everywhere. A node whose cloud-init
 * ended in error is reported in `machines` (the caller judges; drill c
 * expects one).
 */
export async function labUp(stateDir: string, log: Logger, options: UpOptions = {}): Promise<UpResult> {
  const rootfs = await preflight();
  const timings: Record<string, number> = {};
  const t0 = Date.now();
  const { image, mirror } = await labImages(labPlan(), true);
  const plan = labPlan(mirror);
  const layout = labLayout(plan, stateDir);
  await resetState(stateDir, layout, rootfs, log, { mirror: mirror.dir, image, machines: true });

  let t = Date.now();
  const client = hostLayout(layout, CLIENT);
  const pki = await issuePki(plan, layout.pkiDir, client.link.address);
  const pkiProblems = await checkIssued(plan, pki);
  if (pkiProblems.length) throw new Error(`issued certificates do not match the plan:\n  ${pkiProblems.join("\n  ")}`);
  timings.pkiSeconds = (Date.now() - t) / 1000;

  t = Date.now();
  await createNetwork(layout);
  await startInfra({ plan, layout, rootfs, mirror: mirror.dir, parameters: parameterRecords(plan, pki, LAB_STACK), log });
  timings.networkSeconds = (Date.now() - t) / 1000;
  let wan: WanSpec | undefined;
  if (options.wan) {
    t = Date.now();
    wan = await startWan(plan, layout, rootfs, options.wan, log);
    timings.wanSeconds = (Date.now() - t) / 1000;
  }
  // The client is the application's host, not a cluster node: it stays a chroot of the tools rootfs.
  await prepareRoot(client, rootfs);
  prepareClient(client, { caCert: pki.caCert, foreignCa: pki.foreign.caCert, foreignCert: pki.foreign.cert, foreignKey: pki.foreign.key });

  t = Date.now();
  const transport = new LabTransport(layout);
  let restoreEgress: Promise<void> | undefined;
  if (options.egressCutSeconds) {
    await setEgress(false);
    log(`egress: the mirror and the SSM endpoint unreachable for the first ${String(options.egressCutSeconds)} s of the boot`);
    const cutSeconds = options.egressCutSeconds;
    restoreEgress = sleep(cutSeconds * 1000).then(async () => {
      await setEgress(true);
      timings.egressRestoredSeconds = (Date.now() - t) / 1000;
      log(`egress: restored after ${String(cutSeconds)} s`);
    });
  }
  const machines = await bootMachines({ plan, layout, transport, image, log, withoutVolume: options.withoutVolume });
  await restoreEgress;
  timings.bootSeconds = (Date.now() - t) / 1000;
  timings.upSeconds = (Date.now() - t0) / 1000;
  fs.writeFileSync(path.join(stateDir, "boot.json"), JSON.stringify(machines, null, 2));
  for (const record of machines.filter((m) => m.status !== "done"))
    log(`${record.node}: cloud-init ${record.status}:
${record.cloudInit}`);
  return { rootfs, timings, machines, pkiProblems, wan };
}

/**
 * Replaces one node's machine with a new instance on a fresh root disk (as
 * `pulumi up --replace` does), with or without its data volume; returns once
 * the new machine's cloud-init has finished.
 */
export async function labReplaceMachine(stateDir: string, node: string, log: Logger, options: { withVolume: boolean; generation: number }): Promise<MachineBootRecord> {
  const state = JSON.parse(fs.readFileSync(path.join(stateDir, "state.json"), "utf8")) as { image?: string; machines?: boolean };
  if (!state.machines || !state.image) throw new Error(`the lab in ${stateDir} was not booted as machines`);
  const { plan, layout, transport } = labContext(stateDir);
  return replaceMachine({ plan, layout, transport, image: state.image, log, withoutVolume: options.withVolume ? new Set() : new Set([node]) }, node, options.generation);
}

/** Removes whatever an earlier lab left, then records the new one in the state file. */
async function resetState(stateDir: string, layout: LabLayout, rootfs: string, log: Logger, extra: Record<string, unknown> = {}): Promise<void> {
  const owned = labOwnedNamespaces(layout);
  if (await leftoversExist(stateDir, owned)) {
    log("cleaning up the previous lab first");
    const report = await cleanupLab(stateDir, owned, log);
    if (report.problems.length) throw new Error(`cleanup left things behind: ${report.problems.join("; ")}`);
  }
  for (const dir of [path.join(stateDir, "hosts"), path.join(stateDir, "router"), path.join(stateDir, "infra"), layout.wanFile, layout.pkiDir])
    fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(layout.stateFile, JSON.stringify({ rootfs, startedAt: new Date().toISOString(), pid: process.pid, namespaces: owned, ...extra }, null, 2));
}

/**
 * Only the network, the host roots and (optionally) the WAN emulator: no PKI,
 * no machines; every host, nodes included, is a chroot of the tools rootfs in
 * its namespace. The WAN emulator's own test (tests/lab/wan.test.ts) runs on
 * it; `down` removes it like a full lab.
 */
export async function labNetworkUp(
  stateDir: string,
  log: Logger,
  options: Pick<UpOptions, "wan"> = {},
): Promise<{ rootfs: string; layout: LabLayout; plan: ClusterPlan; wan?: WanSpec }> {
  const rootfs = await preflight();
  const plan = labPlan();
  const layout = labLayout(plan, stateDir);
  await resetState(stateDir, layout, rootfs, log);
  await createNetwork(layout);
  const wan = options.wan ? await startWan(plan, layout, rootfs, options.wan, log) : undefined;
  await Promise.all(layout.hosts.map((host) => prepareRoot(host, rootfs)));
  return { rootfs, layout, plan, wan };
}

/** The namespaces of an up lab: the router and every host (what "the lab is up" checks). */
export function labNamespaceNames(layout: LabLayout): string[] {
  return [ROUTER_NS, ...layout.hosts.map((host) => host.ns)];
}

/** Every namespace a lab may create, the machines' infrastructure namespace included (the only ones `down` removes). */
export function labOwnedNamespaces(layout: LabLayout): string[] {
  return [...labNamespaceNames(layout), INFRA_NS];
}

export async function labDown(stateDir: string, log: Logger): Promise<CleanupReport> {
  return cleanupLab(stateDir, labOwnedNamespaces(labLayout(labPlan(), stateDir)), log);
}
