import * as fs from "node:fs";
import * as path from "node:path";
import type { ClusterPlan } from "../plan";
import { encodeUserData, renderUserData } from "../cloud-init/user-data";
import { sleep } from "./exec";
import { hostLayout, type LabLayout } from "./layout";
import { attachVolume, labInstanceId, labVolumeId, loopDevicesUnder, machinePaths, mountDisk, nitroByIdPath, powerOff, startMachine, waitLeader, writeSeed } from "./machine";
import { run } from "./exec";
import type { LabTransport } from "./transport";

export interface MachineBootRecord {
  node: string;
  instanceId: string;
  dataVolumeId?: string;
  /** Bytes of user-data as EC2 would get it (gzip). */
  userDataBytes: number;
  /** `cloud-init status --long` at the end of the boot. */
  cloudInit: string;
  /** cloud-init's verdict: done, error or degraded. */
  status: string;
  /** Seconds from nspawn's start to cloud-init's end. */
  seconds: number;
}

export interface MachineBootOptions {
  plan: ClusterPlan;
  layout: LabLayout;
  transport: LabTransport;
  /** The lab's cloud image (lab/build-image.sh). */
  image: string;
  log: (line: string) => void;
  /** Database nodes that get no data volume (drill c: the attachment never comes). */
  withoutVolume?: ReadonlySet<string>;
  /** How long to wait for cloud-init on every node. */
  timeoutMs?: number;
}

/** The user-data of one node exactly as EC2 gets it: the rendered document, gzip, as bytes (EC2 decodes the base64). */
export function machineUserData(plan: ClusterPlan, node: string): { bytes: Buffer; dataVolumeId?: string } {
  const dataVolumeId = plan.nodes.find((n) => n.name === node)?.roles.has("postgres") ? labVolumeId(node) : undefined;
  const text = renderUserData(plan, node, dataVolumeId ? { dataVolumeId } : {});
  return { bytes: Buffer.from(encodeUserData(text), "base64"), dataVolumeId };
}

/** One node's new root disk, seed and (unless withheld) data volume, booted; returns its record so far. */
async function launchMachine(options: MachineBootOptions, node: string, instanceId: string): Promise<MachineBootRecord> {
  const host = hostLayout(options.layout, node);
  await mountDisk(host, options.image);
  const { bytes, dataVolumeId } = machineUserData(options.plan, node);
  fs.writeFileSync(path.join(path.dirname(host.root), "user-data.gz"), bytes);
  const seedDir = writeSeed(host, bytes, instanceId);
  let volume: { device: string; path: string } | undefined;
  if (dataVolumeId && !options.withoutVolume?.has(node))
    volume = { device: await attachVolume(host, options.plan.config.instances.dataVolumeGiB * 1024), path: nitroByIdPath(dataVolumeId) };
  startMachine({ host, seedDir, volume });
  return { node, instanceId, dataVolumeId, userDataBytes: bytes.length, cloudInit: "", status: "not finished", seconds: 0 };
}

/** Disks, volumes and seeds of every node, then every machine booted at once (as `pulumi up` starts the instances). */
export async function startMachines(options: MachineBootOptions): Promise<Map<string, { started: number; record: MachineBootRecord }>> {
  const { plan, layout, log } = options;
  const started = new Map<string, { started: number; record: MachineBootRecord }>();
  for (const node of plan.nodes) {
    const record = await launchMachine(options, node.name, labInstanceId(node.name));
    started.set(node.name, { started: Date.now(), record });
  }
  await Promise.all(plan.nodes.map((node) => waitLeader(hostLayout(layout, node.name))));
  log(`machines: ${plan.nodes.length} booted with systemd-nspawn from ${path.basename(options.image)}`);
  return started;
}

/**
 * What a failed first boot leaves to read, kept with its verdict: the lab is torn down after a failed `up`, and
 * `cloud-init status` names only the module that failed, not the step.
 */
const FAILURE_EVIDENCE_SCRIPT = [
  "echo '--- the last lines of /var/log/cloud-init-output.log'",
  "tail -n 30 /var/log/cloud-init-output.log",
  "echo '--- failed units'",
  "systemctl --failed --no-legend --plain",
  'for unit in $(systemctl --failed --no-legend --plain | awk \'{print $1}\'); do echo "--- journal of $unit"; journalctl -u "$unit" -n 15 --no-pager -o short-monotonic; done',
].join("\n");

async function failureEvidence(transport: LabTransport, node: string): Promise<string> {
  const result = await transport.run(node, ["sh", "-c", FAILURE_EVIDENCE_SCRIPT], { timeoutMs: 20_000 }).catch((error: unknown) => ({ stdout: "", stderr: String(error) }));
  return (result.stdout || result.stderr).trim();
}

/** cloud-init's verdict on one node, once it has finished (`cloud-init status --wait`). */
export async function waitCloudInit(transport: LabTransport, node: string, timeoutMs: number): Promise<{ status: string; long: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // --wait polls inside the machine; the outer loop covers a machine whose systemd is not up yet.
    const result = await transport.run(node, ["cloud-init", "status", "--wait", "--long"], { timeoutMs: Math.max(1000, deadline - Date.now()) }).catch((error: unknown) => ({
      code: -1,
      stdout: "",
      stderr: error instanceof Error ? error.message : String(error),
    }));
    const status = /^status: (\S+)/m.exec(result.stdout)?.[1];
    if (status === "done") return { status, long: result.stdout.trim() };
    if (status && status !== "running" && status !== "not") return { status, long: `${result.stdout.trim()}\n${await failureEvidence(transport, node)}` };
    if (Date.now() > deadline) throw new Error(`${node}: cloud-init did not finish within ${timeoutMs / 1000} s: ${(result.stdout || result.stderr).trim()}`);
    await sleep(1000);
  }
}

/** Boots every node and waits for cloud-init everywhere; returns each node's record (never throws for a node's error: the caller judges). */
export async function bootMachines(options: MachineBootOptions): Promise<MachineBootRecord[]> {
  const started = await startMachines(options);
  const timeoutMs = options.timeoutMs ?? 20 * 60_000;
  return Promise.all(
    [...started.values()].map(async ({ started: t0, record }) => {
      const { status, long } = await waitCloudInit(options.transport, record.node, timeoutMs);
      const seconds = (Date.now() - t0) / 1000;
      options.log(`${record.node}: cloud-init ${status} after ${seconds.toFixed(0)} s`);
      return { ...record, status, cloudInit: long, seconds };
    }),
  );
}

/**
 * Replaces a node's machine as `pulumi up --replace` replaces an instance:
 * the old one is powered off and its root disk (and volume) discarded, a new
 * instance with a new id boots the same user-data on a fresh disk; `options.withoutVolume`
 * decides whether the new one gets a volume. Waits for cloud-init.
 */
export async function replaceMachine(options: MachineBootOptions, node: string, generation: number): Promise<MachineBootRecord> {
  const host = hostLayout(options.layout, node);
  if (!(await powerOff(host))) throw new Error(`${node}: the machine did not power off`);
  const dir = path.dirname(host.root);
  for (const device of await loopDevicesUnder(dir)) await run(["losetup", "--detach", device]);
  await run(["umount", host.root]);
  for (const stale of [host.upper, host.work, machinePaths(host).volumeFile]) fs.rmSync(stale, { recursive: true, force: true });
  const t0 = Date.now();
  const record = await launchMachine(options, node, labInstanceId(`${node}#${String(generation)}`));
  await waitLeader(host);
  const { status, long } = await waitCloudInit(options.transport, node, options.timeoutMs ?? 20 * 60_000);
  const seconds = (Date.now() - t0) / 1000;
  options.log(`${node}: replaced by ${record.instanceId}; cloud-init ${status} after ${seconds.toFixed(0)} s`);
  return { ...record, status, cloudInit: long, seconds };
}
