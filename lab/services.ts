import * as fs from "node:fs";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { sleep } from "./exec";
import type { HostLayout } from "./layout";
import { namespacePids } from "./netns";
import { mkdirInRoot, resolveInRoot } from "./roots";
import { parseCommandLine, parseUnitFile, serviceSpec, type ServiceSpec } from "./units";

/** Inside every node root: the supervisor, resolved unit specs and their status files (tmpfs /run). */
const LAB_RUN = "/run/pgha-lab";
const SUPERVISOR = `${LAB_RUN}/supervise.py`;
const UNIT_DIRS = ["/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];

export interface ServiceStatus {
  unit: string;
  state: "starting" | "running" | "auto-restart" | "stopped" | "failed" | "exited";
  mainPid: number | null;
  starts: number;
  ready: boolean;
  lastExit: string | null;
  supervisorPid: number;
}

export function installSupervisor(host: HostLayout): void {
  mkdirInRoot(host.root, `${LAB_RUN}/units`);
  fs.copyFileSync(path.join(__dirname, "assets", "supervise.py"), resolveInRoot(host.root, SUPERVISOR));
}

function readInRoot(host: HostLayout, file: string): string | undefined {
  try {
    return fs.readFileSync(resolveInRoot(host.root, file), "utf8");
  } catch {
    return undefined;
  }
}

export function unitText(host: HostLayout, unit: string): string {
  for (const dir of UNIT_DIRS) {
    const text = readInRoot(host, `${dir}/${unit}`);
    if (text !== undefined) return text;
  }
  throw new Error(`${host.name}: no unit file ${unit} in ${UNIT_DIRS.join(", ")}`);
}

/** Resolves the node's unit as systemd would at start time (after daemon-reload). */
export function resolveService(host: HostLayout, unit: string): ServiceSpec {
  return serviceSpec(unit, unitText(host, unit), host.name, (file) => readInRoot(host, file));
}

export function serviceStatus(host: HostLayout, unit: string): ServiceStatus | undefined {
  const text = readInRoot(host, `${LAB_RUN}/units/${unit}.status`);
  if (!text) return undefined;
  try {
    return JSON.parse(text) as ServiceStatus;
  } catch {
    return undefined;
  }
}

/**
 * `systemctl reload UNIT` as argv lists: the unit's ExecReload= lines with
 * $MAINPID of the running service (haproxy.service: `kill -USR2` to its
 * master, which re-reads haproxy.cfg and its certificates seamlessly).
 */
export function reloadCommands(host: HostLayout, unit: string): string[][] {
  const status = serviceStatus(host, unit);
  if (status?.state !== "running" || !status.mainPid) throw new Error(`${host.name}: ${unit} is not running (${status?.state ?? "never started"})`);
  const lines = parseUnitFile(unitText(host, unit)).get("Service")?.get("ExecReload") ?? [];
  if (lines.length === 0) throw new Error(`${host.name}: ${unit} has no ExecReload=`);
  return lines.map((line) => parseCommandLine(line, { MAINPID: String(status.mainPid) }, { unit, host: host.name }).argv);
}

export function serviceLog(host: HostLayout, unit: string): string {
  return path.join(host.logDir, `${unit.replace(/\.service$/, "")}.log`);
}

/**
 * `systemctl start UNIT` in the lab: the supervisor runs the unit inside the
 * node's namespace and chroot; output goes to the host-side log file.
 */
export async function startService(host: HostLayout, unit: string): Promise<ServiceSpec> {
  const current = serviceStatus(host, unit);
  if (current && ["starting", "running", "auto-restart", "exited"].includes(current.state) && (await namespacePids(host.ns)).includes(current.supervisorPid)) {
    return resolveService(host, unit);
  }
  const spec = resolveService(host, unit);
  const specPath = `${LAB_RUN}/units/${unit}.json`;
  const statusPath = `${LAB_RUN}/units/${unit}.status`;
  fs.writeFileSync(resolveInRoot(host.root, specPath), JSON.stringify(spec, null, 2), { mode: 0o600 });
  fs.rmSync(resolveInRoot(host.root, statusPath), { force: true });
  fs.mkdirSync(host.logDir, { recursive: true });
  const out = fs.openSync(serviceLog(host, unit), "a");
  const child = spawn("ip", ["netns", "exec", host.ns, "chroot", host.root, "/usr/bin/python3", SUPERVISOR, specPath, statusPath], {
    detached: true,
    stdio: ["ignore", out, out],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" },
  });
  child.unref();
  fs.closeSync(out);
  // The supervisor writes its status file first thing; wait for it so a stop right after a start finds it.
  for (let i = 0; i < 100 && !serviceStatus(host, unit); i++) await sleep(50);
  if (!serviceStatus(host, unit)) throw new Error(`${host.name}: ${unit} did not start (see ${serviceLog(host, unit)})`);
  return spec;
}

/** `systemctl stop UNIT`: SIGTERM to the supervisor, which stops the unit per KillMode and exits. */
export async function stopService(host: HostLayout, unit: string, timeoutMs = 90_000): Promise<void> {
  const status = serviceStatus(host, unit);
  if (!status) return;
  const pids = await namespacePids(host.ns);
  if (!pids.includes(status.supervisorPid)) return;
  process.kill(status.supervisorPid, "SIGTERM");
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await namespacePids(host.ns)).includes(status.supervisorPid)) return;
    await sleep(100);
  }
  throw new Error(`${host.name}: ${unit} did not stop within ${timeoutMs} ms`);
}

export interface ProcessInfo {
  pid: number;
  exe: string;
  cmdline: string[];
  uid: number;
}

/** Processes in a host's namespace, with their executable (as seen from the host) and argv. */
export async function hostProcesses(host: HostLayout): Promise<ProcessInfo[]> {
  const infos: ProcessInfo[] = [];
  for (const pid of await namespacePids(host.ns)) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      let exe = "";
      try {
        exe = fs.readlinkSync(`/proc/${pid}/exe`);
      } catch {
        exe = "";
      }
      const uidLine = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
      infos.push({ pid, exe: exe.startsWith(host.root) ? exe.slice(host.root.length) : exe, cmdline, uid: Number(uidLine?.[1] ?? -1) });
    } catch {
      // exited meanwhile
    }
  }
  return infos;
}
