import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OVERLAY_CHROOT_SCRIPT } from "../../lab/chromium";
import { exec, type ExecResult } from "../../lab/exec";

/**
 * Runs the real programs (cloud-init, haproxy, patroni, etcd, openssl) from
 * the Debian 13 rootfs that `lab/build-rootfs.sh` builds. Each "root" is an
 * overlay over that rootfs mounted inside a private mount namespace
 * (`unshare -m`), so nothing is mounted in, or written to, the shared tree
 * and everything vanishes with the process.
 */

/** Fails (never skips) when the machine cannot run the real programs. */
export function rootfsPath(): string {
  if (process.getuid?.() !== 0) throw new Error("render tests run the real programs in a chroot: run them as root");
  const fromEnv = process.env.PGHA_ROOTFS;
  if (fromEnv) return fromEnv;
  const script = path.join(__dirname, "..", "..", "lab", "build-rootfs.sh");
  // Cached: prints the path at once when the rootfs exists, builds it otherwise.
  return execFileSync("bash", [script], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}

let rootCount = 0;

export class TestRoot {
  readonly upper: string;
  private readonly work: string;
  readonly merged: string;

  constructor(
    readonly rootfs: string,
    readonly base: string,
    name: string,
  ) {
    const dir = path.join(base, `${name}-${++rootCount}`);
    this.upper = path.join(dir, "upper");
    this.work = path.join(dir, "work");
    this.merged = path.join(dir, "merged");
    for (const dir of [this.upper, this.work, this.merged]) fs.mkdirSync(dir, { recursive: true });
  }

  /** Uid/gid of a user of the rootfs (for files written into the upper layer). */
  account(name: string): { uid: number; gid: number } {
    const line = fs
      .readFileSync(path.join(this.rootfs, "etc/passwd"), "utf8")
      .split("\n")
      .find((l) => l.startsWith(`${name}:`));
    if (!line) throw new Error(`no user ${name} in the rootfs`);
    const [, , uid, gid] = line.split(":");
    return { uid: Number(uid), gid: Number(gid) };
  }

  /** Writes a file at its absolute path inside the root, with owner (user or user:group) and octal mode. */
  write(file: string, content: string, owner = "root", mode = "0644"): void {
    const target = path.join(this.upper, file);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, content);
    const { uid, gid } = this.account(owner.split(":")[0]);
    fs.chownSync(target, uid, gid);
    fs.chmodSync(target, parseInt(mode, 8));
  }

  /** Host path of a file inside the root's writable layer. */
  hostPath(file: string): string {
    return path.join(this.upper, file);
  }

  /**
   * Runs argv inside the root (optionally in a network namespace and as a
   * user). The overlay, /proc, /dev and a tmpfs /dev/shm exist only in the
   * command's own mount namespace.
   */
  run(argv: string[], options: { netns?: string; user?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<ExecResult> {
    const script = OVERLAY_CHROOT_SCRIPT;
    const inner = options.user ? ["runuser", "-u", options.user, "--", ...argv] : argv;
    const envArgs = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", this.rootfs, this.upper, this.work, this.merged, "env", ...envArgs, ...inner];
    return exec(options.netns ? ["ip", "netns", "exec", options.netns, ...command] : command, { timeoutMs: options.timeoutMs ?? 60_000 });
  }
}

/**
 * The .deb files lab/setup.sh downloaded for a list of test-only packages:
 * its cache directory is keyed by the rootfs and the list, as setup computes it.
 */
export function cachedDebs(rootfs: string, packages: readonly string[]): string[] {
  const key = createHash("sha256")
    .update([path.basename(rootfs), ...packages].map((l) => `${l}\n`).join(""))
    .digest("hex")
    .slice(0, 12);
  const dir = path.join(path.dirname(rootfs), "debs", key);
  if (!fs.existsSync(path.join(dir, ".pgha-complete"))) throw new Error(`${dir}: ${packages.join(", ")} not downloaded; run \`sudo npm run setup\``);
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith(".deb"))
    .map((f) => path.join(dir, f));
}

export function scratchDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `pgha-${prefix}-`));
}

export interface TestNetwork {
  /** Namespace of each address. */
  namespaces: Map<string, string>;
  remove: () => Promise<void>;
}

async function must(argv: string[]): Promise<void> {
  const result = await exec(argv);
  if (result.code !== 0) throw new Error(`${argv.join(" ")}: ${result.stderr}`);
}

/**
 * One namespace per address, all on one bridge in a hub namespace: a flat
 * 10.0.0.0/8 segment. Each host has its own loopback, as real nodes do
 * (etcd listens on 127.0.0.1:2379 on every member).
 */
export async function testNetwork(prefix: string, addresses: string[]): Promise<TestNetwork> {
  const hub = `${prefix}-hub`;
  const namespaces = new Map(addresses.map((address, i) => [address, `${prefix}-${i}`]));
  const all = [hub, ...namespaces.values()];
  const remove = async (): Promise<void> => {
    for (const ns of all) {
      for (const pid of (await exec(["ip", "netns", "pids", ns])).stdout.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
      await exec(["ip", "netns", "delete", ns]);
    }
  };
  await remove();
  await must(["ip", "netns", "add", hub]);
  await must(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"]);
  await must(["ip", "-n", hub, "link", "set", "br0", "up"]);
  let index = 0;
  for (const [address, ns] of namespaces) {
    const peer = `h${index++}`;
    await must(["ip", "netns", "add", ns]);
    await must(["ip", "-n", ns, "link", "set", "lo", "up"]);
    await must(["ip", "-n", hub, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    await must(["ip", "-n", hub, "link", "set", peer, "master", "br0", "up"]);
    await must(["ip", "-n", ns, "addr", "add", `${address}/8`, "dev", "eth0"]);
    await must(["ip", "-n", ns, "link", "set", "eth0", "up"]);
  }
  return { namespaces, remove };
}
