import * as fs from "node:fs";
import * as path from "node:path";
import { exec, sleep } from "./exec";
import { deleteNamespace, existingNamespaces, namespacePids } from "./netns";
import { mountsUnder, unmountAll } from "./roots";
import { loopDevicesUnder, machineWrapperPids, powerOff } from "./machine";

/** Processes whose root directory lies inside the lab's state dir (chrooted into a node root). */
function chrootedPids(stateDir: string): number[] {
  const prefix = `${path.resolve(stateDir)}/`;
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (`${fs.readlinkSync(`/proc/${entry}/root`)}/`.startsWith(prefix)) pids.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}

/**
 * The namespaces this lab owns: the ones its layout names, plus any recorded
 * in the state file by an earlier `up`. Other `pgha-` namespaces (the render
 * tests use `pgha-render-*`) are never touched.
 */
function ownedNamespaceNames(stateDir: string, expected: string[]): Set<string> {
  const names = new Set(expected);
  try {
    const state = JSON.parse(fs.readFileSync(path.join(stateDir, "state.json"), "utf8")) as { namespaces?: string[] };
    for (const ns of state.namespaces ?? []) names.add(ns);
  } catch {
    // no state file
  }
  return names;
}

async function labNamespaces(stateDir: string, expected: string[]): Promise<string[]> {
  const owned = ownedNamespaceNames(stateDir, expected);
  return (await existingNamespaces()).filter((ns) => owned.has(ns));
}

async function labPids(stateDir: string, expected: string[]): Promise<number[]> {
  const pids = new Set<number>(chrootedPids(stateDir));
  for (const ns of await labNamespaces(stateDir, expected)) for (const pid of await namespacePids(ns)) pids.add(pid);
  pids.delete(process.pid);
  return [...pids];
}

function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

export interface CleanupReport {
  killed: number;
  unmounted: number;
  namespaces: string[];
  problems: string[];
}

/**
 * Removes every process, mount and namespace the lab made; safe to run at
 * any time, also after a crash or Ctrl-C. Processes are found by namespace
 * (`ip netns pids`) and by their chroot, never by name.
 */
export async function cleanupLab(stateDir: string, expected: string[], log: (line: string) => void = () => undefined): Promise<CleanupReport> {
  const problems: string[] = [];
  // Machines first, gracefully: their systemd stops the services in order (a plain kill would leave nspawn to reap).
  const wrappers = machineWrapperPids(stateDir);
  if (wrappers.length) {
    log(`powering off ${wrappers.length} machine(s)`);
    const hostsDir = path.join(stateDir, "hosts");
    await Promise.all(fs.readdirSync(hostsDir).map((name) => powerOff({ root: path.join(hostsDir, name, "root") }, 30_000)));
    signal(machineWrapperPids(stateDir), "SIGKILL");
  }
  let pids = await labPids(stateDir, expected);
  const killed = pids.length;
  if (pids.length) {
    log(`stopping ${pids.length} lab process(es)`);
    signal(pids, "SIGTERM");
    for (let i = 0; i < 20 && pids.length; i++) {
      await sleep(250);
      pids = await labPids(stateDir, expected);
    }
    if (pids.length) {
      signal(pids, "SIGKILL");
      for (let i = 0; i < 20 && pids.length; i++) {
        await sleep(250);
        pids = await labPids(stateDir, expected);
      }
    }
    if (pids.length) problems.push(`processes still alive: ${pids.join(" ")}`);
  }
  const mounted = fs.existsSync(stateDir) ? mountsUnder(path.resolve(stateDir)).length : 0;
  if (mounted) {
    log(`unmounting ${mounted} mount(s)`);
    problems.push(...(await unmountAll(path.resolve(stateDir))));
  }
  for (const device of await loopDevicesUnder(stateDir)) {
    const detached = await exec(["losetup", "--detach", device]);
    if (detached.code !== 0) problems.push(`${device}: ${detached.stderr.trim()}`);
  }
  const namespaces = await labNamespaces(stateDir, expected);
  for (const ns of namespaces) await deleteNamespace(ns);
  const left = await labNamespaces(stateDir, expected);
  if (left.length) problems.push(`namespaces still present: ${left.join(" ")}`);
  if (namespaces.length) log(`deleted namespaces: ${namespaces.join(" ")}`);
  return { killed, unmounted: mounted, namespaces, problems };
}

/** True when anything of a previous lab is still around. */
export async function leftoversExist(stateDir: string, expected: string[]): Promise<boolean> {
  if ((await labNamespaces(stateDir, expected)).length) return true;
  if (fs.existsSync(stateDir) && mountsUnder(path.resolve(stateDir)).length) return true;
  if (machineWrapperPids(stateDir).length || (await loopDevicesUnder(stateDir)).length) return true;
  return chrootedPids(stateDir).length > 0;
}
