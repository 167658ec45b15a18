import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as readline from "node:readline";
import { exec, sleep } from "./exec";
import { CLIENT, hostLayout, type HostLayout, type LabLayout } from "./layout";
import { cutLink, cutPath, linkIsUp, restoreAllPaths, restoreLink, restorePath } from "./netns";
import { readAccounts, resolveInRoot } from "./roots";
import { childPids, machineLeader, machinePaths, waitLeader } from "./machine";
import { parseEnvironmentFile } from "../checks/env-file";
import type { NodeTransport, RunningCommand, RunOptions, RunResult, ServiceName } from "../checks/transport";

/** Network faults; in the lab a link cut in the router, on AWS a security-group or NACL swap. */
export interface FaultInjector {
  isolate(nodes: string[]): Promise<void>;
  reconnect(nodes: string[]): Promise<void>;
  /**
   * Cuts only the path between two nodes, both directions; each still reaches
   * every other host (on AWS, a network ACL denying the pair's addresses).
   */
  cutPath(a: string, b: string): Promise<void>;
  restorePath(a: string, b: string): Promise<void>;
  /** Undoes every fault still in place (after an interrupted drill); returns the nodes healed. */
  healAll(): Promise<string[]>;
  /**
   * Reboots a node's OS (on AWS, `aws ec2 reboot-instances`): returns once the
   * old boot has ended and the next one's PID 1 runs; `waitBooted` waits for
   * the rest of the boot.
   */
  reboot(node: string): Promise<void>;
  /** Waits until the node's systemd has finished booting; returns `systemctl is-system-running`'s word. */
  waitBooted(node: string, timeoutMs?: number): Promise<string>;
}

const BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export class LabTransport implements NodeTransport, FaultInjector {
  readonly kind = "lab";
  constructor(private readonly layout: LabLayout) {}

  host(node: string): HostLayout {
    return hostLayout(this.layout, node);
  }

  /** The variables of the node's EnvironmentFiles (read host-side from the node's root). */
  private envFileVariables(node: string, files: string[] = []): Record<string, string> {
    const root = this.host(node).root;
    return Object.assign({}, ...files.map((file) => parseEnvironmentFile(fs.readFileSync(resolveInRoot(root, file), "utf8")))) as Record<string, string>;
  }

  /**
   * True when the host is a booted machine (lab/machine.ts): commands enter
   * it, its own systemd runs the services. Every node of an `up` lab is one;
   * the client (and every host of the WAN test's network-only lab) is a
   * chroot of the tools rootfs in its namespace.
   */
  isMachine(node: string): boolean {
    return fs.existsSync(machinePaths(this.host(node)).wrapperPidFile);
  }

  /** The machine's PID 1 as the host sees it (changes with every boot). */
  private leader(node: string): number {
    const leader = machineLeader(this.host(node));
    if (leader === undefined) throw new Error(`${node}: the machine is not running (no systemd inside; see ${machinePaths(this.host(node)).consoleLog})`);
    return leader;
  }

  /**
   * A machine: nsenter into all of its namespaces (root included); a chroot
   * host (the client): ip netns exec NS chroot ROOT. Then [setpriv --reuid U --regid G --init-groups --] env -i ... argv.
   */
  commandLine(node: string, argv: string[], options: RunOptions = {}): string[] {
    const host = this.host(node);
    const user = options.user ?? "root";
    const account = readAccounts(host.root).users.get(user);
    if (!account) throw new Error(`${node}: no user ${user}`);
    const env = { PATH: BASE_PATH, HOME: account.home, USER: user, LOGNAME: user, LANG: "C.UTF-8", ...(options.env ?? {}), ...this.envFileVariables(node, options.envFiles) };
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const drop = user === "root" ? [] : ["/usr/bin/setpriv", `--reuid=${user}`, `--regid=${account.gid}`, "--init-groups", "--"];
    const enter = this.isMachine(node) ? ["nsenter", `--target=${String(this.leader(node))}`, "--all", "--root", "--wd"] : ["ip", "netns", "exec", host.ns, "chroot", host.root];
    return [...enter, ...drop, "/usr/bin/env", "-i", ...envArgs, ...argv];
  }

  async run(node: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
    const result = await exec(this.commandLine(node, argv, options), { timeoutMs: options.timeoutMs ?? 30_000, input: options.input, env: { PATH: BASE_PATH } });
    return { code: result.code, stdout: result.stdout, stderr: result.stderr };
  }

  spawn(node: string, argv: string[], options: RunOptions = {}): RunningCommand {
    const [command, ...args] = this.commandLine(node, argv, options);
    const child: ChildProcess = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: { PATH: BASE_PATH } });
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-20_000);
    });
    const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const handlers: ((line: string) => void)[] = [];
    lines.on("line", (line) => {
      handlers.forEach((handler) => {
        handler(line);
      });
    });
    const exited = new Promise<number>((resolve) =>
      child.on("close", (code, signal) => {
        resolve(code ?? (signal ? 128 : 0));
      }),
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    return {
      onLine: (handler) => void handlers.push(handler),
      exited,
      stderr: () => stderr,
      stop: async () => {
        child.stdin?.end();
        // nsenter forks the command into the machine and passes no signal on (bookworm's has no --kill-child):
        // signal the command itself, or it runs on and holds the pipes open until it ends by itself.
        const inside = child.pid === undefined ? [] : descendants(child.pid);
        signalAll(inside, "SIGTERM");
        child.kill("SIGTERM");
        const timer = setTimeout(() => {
          signalAll(inside, "SIGKILL");
          child.kill("SIGKILL");
        }, 5000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      },
    };
  }

  /** A node's file, read inside its machine; the client's, host-side from its root. */
  async readFile(node: string, file: string): Promise<string> {
    if (node === CLIENT) return fs.readFileSync(resolveInRoot(this.host(node).root, file), "utf8");
    const result = await this.run(node, ["cat", "--", file]);
    if (result.code !== 0) throw new Error(`${node}: cannot read ${file}: ${result.stderr.trim()}`);
    return result.stdout;
  }

  /** A unit's log so far: the machine's journal (message text only, as the service wrote it). */
  async unitLog(node: string, unit: string): Promise<string> {
    const result = await this.run(node, ["journalctl", "--no-pager", "--output=cat", `--unit=${unit}`], { timeoutMs: 60_000 });
    if (result.code !== 0) throw new Error(`${node}: journalctl --unit=${unit} failed: ${result.stderr.trim()}`);
    return result.stdout;
  }

  /** systemctl VERB UNIT inside the machine; throws with systemd's own words. */
  private async systemctl(node: string, verb: string, unit: string, timeoutMs = 300_000): Promise<void> {
    const result = await this.run(node, ["systemctl", verb, unit], { timeoutMs });
    if (result.code !== 0) throw new Error(`${node}: systemctl ${verb} ${unit} failed (exit ${String(result.code)}): ${result.stderr.trim()}`);
  }

  async startService(node: string, unit: string): Promise<void> {
    return this.systemctl(node, "start", unit);
  }

  async stopService(node: string, unit: string): Promise<void> {
    return this.systemctl(node, "stop", unit);
  }

  async reloadService(node: string, unit: string): Promise<void> {
    return this.systemctl(node, "reload", unit, 60_000);
  }

  async serviceActive(node: string, unit: string): Promise<boolean> {
    return (await this.run(node, ["systemctl", "is-active", "--quiet", unit])).code === 0;
  }

  async signalProcesses(node: string, service: ServiceName, signal: NodeJS.Signals): Promise<number> {
    // pkill inside the machine; --echo prints one line per process signalled.
    const result = await this.run(node, ["pkill", `--signal=${signal.replace(/^SIG/, "")}`, "--echo", ...PKILL_PATTERN[service]]);
    if (result.code > 1) throw new Error(`${node}: pkill ${service} failed (exit ${String(result.code)}): ${result.stderr.trim()}`);
    return result.stdout.split("\n").filter(Boolean).length;
  }

  async isolate(nodes: string[]): Promise<void> {
    for (const node of nodes) await cutLink(this.host(node));
  }

  async reconnect(nodes: string[]): Promise<void> {
    for (const node of nodes) await restoreLink(this.host(node));
    await sleep(50);
  }

  async cutPath(a: string, b: string): Promise<void> {
    await cutPath(this.host(a), this.host(b));
  }

  async restorePath(a: string, b: string): Promise<void> {
    await restorePath(this.host(a), this.host(b));
  }

  async reboot(node: string): Promise<void> {
    const before = this.leader(node);
    // --no-block: the job is queued and systemctl returns before the shutdown kills it.
    const result = await this.run(node, ["systemctl", "--no-block", "reboot"]);
    if (result.code !== 0) throw new Error(`${node}: systemctl reboot failed (exit ${String(result.code)}): ${result.stderr.trim()}`);
    await waitLeader(this.host(node), 120_000, before);
  }

  async waitBooted(node: string, timeoutMs = 180_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // --wait returns when the boot is over (running or degraded); the loop covers a PID 1 not yet answering.
      const result = await this.run(node, ["systemctl", "is-system-running", "--wait"], { timeoutMs: Math.max(1000, deadline - Date.now()) }).catch(() => undefined);
      const state = result?.stdout.trim();
      if (state === "running" || state === "degraded") return state;
      if (Date.now() > deadline) throw new Error(`${node}: the boot did not finish within ${timeoutMs / 1000} s (is-system-running: ${state ?? "no answer"})`);
      await sleep(500);
    }
  }

  async healAll(): Promise<string[]> {
    const healed: string[] = [];
    for (const host of this.layout.hosts) {
      if (!(await linkIsUp(host))) {
        await restoreLink(host);
        healed.push(host.name);
      }
    }
    for (const path of await restoreAllPaths()) healed.push(`path ${path}`);
    return healed;
  }
}

/** pkill's selection of each service's processes inside a machine: the postgres processes, Patroni's Python, etcd, HAProxy. */
const PKILL_PATTERN: Record<ServiceName, string[]> = {
  postgres: ["--exact", "postgres"],
  patroni: ["--full", "^/usr/bin/python3 /usr/bin/patroni( |$)"],
  etcd: ["--exact", "etcd"],
  haproxy: ["--exact", "haproxy"],
};

/** Every descendant of a host process (deepest last), from /proc's children lists. */
function descendants(pid: number): number[] {
  const found: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const parent = queue.shift() as number;
    const kids = childPids(parent);
    found.push(...kids);
    queue.push(...kids);
  }
  return found;
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone already
    }
  }
}
