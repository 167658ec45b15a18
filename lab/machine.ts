import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { exec, run, sleep } from "./exec";
import type { HostLayout } from "./layout";

/**
 * A lab node as a machine: its own root disk (an overlay over the lab's
 * cloud image), a NoCloud seed that holds exactly the user-data EC2 would
 * get, an optional data volume (a loop device at the Nitro NVMe by-id path),
 * and Debian 13's systemd booted as PID 1 by systemd-nspawn inside the node's
 * network namespace. Nothing here writes a file of the node: cloud-init and
 * systemd inside the machine do, from the seed.
 *
 * A reboot inside the machine ends nspawn with exit status 133; the wrapper
 * starts it again on the same disk and volume, as a hypervisor would.
 */

/** nspawn's exit status when the machine asked for a reboot (systemd-nspawn(1)). */
export const NSPAWN_REBOOT_STATUS = 133;

/** EC2's by-id name of an EBS volume (what pgha-prepare-data-volume looks for). */
export function nitroByIdPath(volumeId: string): string {
  return `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volumeId.replace(/-/g, "")}`;
}

/** Stable EC2-shaped ids for a lab node (ids are per node name, so a rerun renders the same user-data). */
export function labInstanceId(node: string): string {
  return `i-0${createHash("sha256").update(`instance:${node}`).digest("hex").slice(0, 16)}`;
}
export function labVolumeId(node: string): string {
  return `vol-0${createHash("sha256").update(`volume:${node}`).digest("hex").slice(0, 16)}`;
}

export interface MachinePaths {
  seedDir: string;
  volumeFile: string;
  consoleLog: string;
  wrapperPidFile: string;
  nspawnPidFile: string;
}

export function machinePaths(host: Pick<HostLayout, "root">): MachinePaths {
  const dir = path.dirname(host.root);
  return {
    seedDir: path.join(dir, "seed"),
    volumeFile: path.join(dir, "data-volume.img"),
    consoleLog: path.join(dir, "console.log"),
    wrapperPidFile: path.join(dir, "machine.pid"),
    nspawnPidFile: path.join(dir, "nspawn.pid"),
  };
}

/**
 * The kernel command line words the container's systemd needs on this host:
 * none on a cgroup v2 only host (GitHub's ubuntu-24.04 runners); on a v1 or
 * hybrid layout, systemd 256+ refuses to boot without the legacy words.
 */
export function cgroupWords(mounts = fs.readFileSync("/proc/self/mounts", "utf8")): string[] {
  const cgroupRoot = mounts.split("\n").find((line) => line.split(" ")[1] === "/sys/fs/cgroup");
  const unifiedOnly = cgroupRoot?.split(" ")[2] === "cgroup2";
  return unifiedOnly ? [] : ["systemd.unified_cgroup_hierarchy=0", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1"];
}

/** The NoCloud seed: user-data byte for byte as EC2 hands it to cloud-init (gzip included), meta-data with the instance id and hostname. */
export function writeSeed(host: HostLayout, userData: Buffer, instanceId: string): string {
  const { seedDir } = machinePaths(host);
  fs.rmSync(seedDir, { recursive: true, force: true });
  fs.mkdirSync(seedDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(seedDir, "user-data"), userData, { mode: 0o600 });
  fs.writeFileSync(path.join(seedDir, "meta-data"), yaml.dump({ "instance-id": instanceId, "local-hostname": host.name }), { mode: 0o600 });
  return seedDir;
}

/** A sparse file attached to a free loop device (the machine's EBS volume); returns the device. */
export async function attachVolume(host: HostLayout, sizeMiB: number): Promise<string> {
  const { volumeFile } = machinePaths(host);
  fs.rmSync(volumeFile, { force: true });
  const fd = fs.openSync(volumeFile, "w", 0o600);
  fs.ftruncateSync(fd, sizeMiB * 1024 * 1024);
  fs.closeSync(fd);
  return (await run(["losetup", "--find", "--show", volumeFile])).trim();
}

/** Loop devices backed by files under `dir` (`down` detaches them). */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  const result = await exec(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"]);
  const prefix = `${path.resolve(dir)}/`;
  return result.stdout
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 2 && (fields[1] ?? "").startsWith(prefix))
    .map((fields) => fields[0] ?? "");
}

export async function mountDisk(host: HostLayout, image: string): Promise<void> {
  for (const dir of [host.upper, host.work, host.root, host.logDir]) fs.mkdirSync(dir, { recursive: true });
  await run(["mount", "-t", "overlay", "overlay", "-o", `lowerdir=${image},upperdir=${host.upper},workdir=${host.work}`, host.root]);
}

export interface MachineSpec {
  host: HostLayout;
  seedDir: string;
  /** Loop device and the path the machine sees it at. */
  volume?: { device: string; path: string };
}

/** The nspawn command line (one boot). */
export function nspawnArgv(spec: MachineSpec, words = cgroupWords()): string[] {
  const { host } = spec;
  return [
    "systemd-nspawn",
    "--quiet",
    // No machined or system bus on the lab host (LAB-NOTES: "Real systemd in the lab").
    "--register=no",
    "--keep-unit",
    `--directory=${host.root}`,
    `--machine=${host.name}`,
    `--network-namespace-path=/run/netns/${host.ns}`,
    // With the namespace above, not a new one: what makes nspawn grant CAP_NET_ADMIN and mount /proc/sys/net
    // writable, as root on an instance has them (pgha-path-mtu sets routes and net.ipv4.tcp_mtu_probing).
    "--private-network",
    // The machine's /etc is cloud-init's to write; nspawn leaves resolv.conf, the time zone and the journal alone.
    "--resolv-conf=off",
    "--timezone=off",
    "--link-journal=no",
    "--console=read-only",
    `--bind-ro=${spec.seedDir}:/var/lib/cloud/seed/nocloud`,
    ...(spec.volume ? [`--bind=${spec.volume.device}:${spec.volume.path}`] : []),
    "--boot",
    ...words,
  ];
}

/** Boots the machine in the background: nspawn under a loop that boots it again after a reboot; console to console.log. */
export function startMachine(spec: MachineSpec): void {
  const paths = machinePaths(spec.host);
  const argv = nspawnArgv(spec);
  // The wrapper records nspawn's PID (the leader is found below it) and ends on anything but a reboot.
  const script = [
    "while :; do",
    '  "$@" & echo $! > "$PGHA_NSPAWN_PID"',
    "  wait $!; status=$?",
    `  [ "$status" -eq ${NSPAWN_REBOOT_STATUS} ] || exit "$status"`,
    '  echo "== $(date -u +%FT%TZ) reboot" >&2',
    "done",
  ].join("\n");
  const out = fs.openSync(paths.consoleLog, "a");
  const child = spawn("sh", ["-c", script, "machine", ...argv], {
    detached: true,
    stdio: ["ignore", out, out],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8", PGHA_NSPAWN_PID: paths.nspawnPidFile },
  });
  child.unref();
  fs.closeSync(out);
  fs.writeFileSync(paths.wrapperPidFile, `${String(child.pid)}\n`);
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, "utf8").trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A host process's direct children (from /proc). */
export function childPids(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The container's PID 1 as the host sees it: the descendant of nspawn whose innermost PID is 1. */
export function machineLeader(host: Pick<HostLayout, "root">): number | undefined {
  const nspawn = readPid(machinePaths(host).nspawnPidFile);
  if (nspawn === undefined || !alive(nspawn)) return undefined;
  const queue = childPids(nspawn);
  while (queue.length) {
    const pid = queue.shift() as number;
    try {
      const nspid = /^NSpid:\s+(.*)$/m
        .exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]
        ?.trim()
        .split(/\s+/);
      if (nspid && nspid.length > 1 && nspid.at(-1) === "1") return pid;
    } catch {
      continue;
    }
    queue.push(...childPids(pid));
  }
  return undefined;
}

/** True while the machine's wrapper (and so the machine, or its next boot) runs. */
export function machineRunning(host: HostLayout): boolean {
  const wrapper = readPid(machinePaths(host).wrapperPidFile);
  return wrapper !== undefined && alive(wrapper);
}

/** Waits for the leader to exist (first boot, or the next boot after a reboot). */
export async function waitLeader(host: HostLayout, timeoutMs = 60_000, notPid?: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const leader = machineLeader(host);
    if (leader !== undefined && leader !== notPid) return leader;
    if (!machineRunning(host)) throw new Error(`${host.name}: the machine is not running (see ${machinePaths(host).consoleLog})`);
    await sleep(100);
  }
  throw new Error(`${host.name}: no systemd inside the machine after ${timeoutMs / 1000} s (see ${machinePaths(host).consoleLog})`);
}

/** Powers the machine off (SIGRTMIN+4 to its systemd: `systemctl poweroff`), then waits for nspawn to end. */
export async function powerOff(host: Pick<HostLayout, "root">, timeoutMs = 60_000): Promise<boolean> {
  const wrapper = readPid(machinePaths(host).wrapperPidFile);
  if (wrapper === undefined || !alive(wrapper)) return true;
  const leader = machineLeader(host);
  // Node's process.kill knows no real-time signals ("Unknown signal: SIGRTMIN+4"), so kill(1) sends it; a machine
  // already going away makes it fail, which the wait below settles.
  if (leader !== undefined) await exec(["kill", "-s", "RTMIN+4", String(leader)]);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive(wrapper)) return true;
    await sleep(200);
  }
  return false;
}

/** Everything the lab knows of running machines under a state dir (for `down` after a crash). */
export function machineWrapperPids(stateDir: string): number[] {
  const hostsDir = path.join(stateDir, "hosts");
  if (!fs.existsSync(hostsDir)) return [];
  return fs
    .readdirSync(hostsDir)
    .map((name) => readPid(path.join(hostsDir, name, "machine.pid")))
    .filter((pid): pid is number => pid !== undefined && alive(pid));
}
