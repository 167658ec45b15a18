import * as fs from "node:fs";
import * as path from "node:path";
import { exec, run } from "./exec";
import type { HostLayout } from "./layout";

/**
 * A private root per host: an overlay over the shared rootfs, with /proc,
 * a minimal /dev (device nodes, writable tmpfs /dev/shm), /run and /tmp all
 * mounted before any service starts (LAB-NOTES: `ip netns exec` copies the
 * mount table at start; a missing /dev/shm silently disables failover).
 */
export async function mountRoot(host: HostLayout, rootfs: string): Promise<void> {
  for (const dir of [host.upper, host.work, host.root, host.logDir]) fs.mkdirSync(dir, { recursive: true });
  const root = host.root;
  await run(["mount", "-t", "overlay", "overlay", "-o", `lowerdir=${rootfs},upperdir=${host.upper},workdir=${host.work}`, root]);
  await run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", path.join(root, "proc")]);
  const dev = path.join(root, "dev");
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,mode=0755,size=1m", "tmpfs", dev]);
  const nodes: [string, number, number][] = [
    ["null", 1, 3],
    ["zero", 1, 5],
    ["full", 1, 7],
    ["random", 1, 8],
    ["urandom", 1, 9],
    ["tty", 5, 0],
  ];
  for (const [name, major, minor] of nodes) {
    await run(["mknod", "-m", "0666", path.join(dev, name), "c", String(major), String(minor)]);
  }
  fs.symlinkSync("/proc/self/fd", path.join(dev, "fd"));
  fs.symlinkSync("/proc/self/fd/0", path.join(dev, "stdin"));
  fs.symlinkSync("/proc/self/fd/1", path.join(dev, "stdout"));
  fs.symlinkSync("/proc/self/fd/2", path.join(dev, "stderr"));
  fs.mkdirSync(path.join(dev, "shm"));
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=256m", "tmpfs", path.join(dev, "shm")]);
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=0755,size=64m", "tmpfs", path.join(root, "run")]);
  await run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=256m", "tmpfs", path.join(root, "tmp")]);
  fs.mkdirSync(path.join(root, "run", "lock"), { mode: 0o1777 });
}

function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Mount points under `dir`, deepest and latest first (the order to unmount them in). */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const lines = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter(Boolean);
  const points = lines.map((line) => unescapeMountPath(line.split(" ")[4] ?? "")).filter((point) => point.startsWith(prefix));
  return points.reverse();
}

/** Unmounts everything the lab mounted under `dir`, in reverse order; lazily as a last resort. */
export async function unmountAll(dir: string): Promise<string[]> {
  const problems: string[] = [];
  for (let pass = 0; pass < 5; pass++) {
    const points = mountsUnder(dir);
    if (points.length === 0) return problems;
    for (const point of points) {
      const result = await exec(["umount", point]);
      if (result.code !== 0 && pass >= 2) {
        const lazy = await exec(["umount", "-l", point]);
        if (lazy.code !== 0) problems.push(`${point}: ${lazy.stderr.trim()}`);
      }
    }
  }
  return [...problems, ...mountsUnder(dir).map((point) => `${point}: still mounted`)];
}

/**
 * Resolves a path as a process chrooted into `root` would, following
 * symlinks inside the root (an absolute link such as /var/run -> /run must
 * not escape to the host's /run). Missing trailing components are kept.
 */
export function resolveInRoot(root: string, target: string): string {
  const parts = target.split("/").filter(Boolean);
  let current: string[] = [];
  let hops = 0;
  while (parts.length > 0) {
    const part = parts.shift() as string;
    if (part === ".") continue;
    if (part === "..") {
      current.pop();
      continue;
    }
    const candidate = path.join(root, ...current, part);
    let stat: fs.Stats | undefined;
    try {
      stat = fs.lstatSync(candidate);
    } catch {
      stat = undefined;
    }
    if (stat?.isSymbolicLink()) {
      if (++hops > 40) throw new Error(`too many symlinks resolving ${target} in ${root}`);
      const link = fs.readlinkSync(candidate);
      if (link.startsWith("/")) current = [];
      parts.unshift(...link.split("/").filter(Boolean));
      continue;
    }
    current.push(part);
  }
  return path.join(root, ...current);
}

export interface Accounts {
  users: Map<string, { uid: number; gid: number; home: string }>;
  groups: Map<string, number>;
}

/** The root's own /etc/passwd and /etc/group (owners are resolved inside the node, not on the host). */
export function readAccounts(root: string): Accounts {
  const users = new Map<string, { uid: number; gid: number; home: string }>();
  const groups = new Map<string, number>();
  for (const line of fs.readFileSync(resolveInRoot(root, "/etc/passwd"), "utf8").split("\n")) {
    const f = line.split(":");
    if (f.length >= 7) users.set(f[0], { uid: Number(f[2]), gid: Number(f[3]), home: f[5] });
  }
  for (const line of fs.readFileSync(resolveInRoot(root, "/etc/group"), "utf8").split("\n")) {
    const f = line.split(":");
    if (f.length >= 3) groups.set(f[0], Number(f[2]));
  }
  return { users, groups };
}

/** "user:group" (or "user") → numeric ids from the root's account files. */
export function resolveOwner(accounts: Accounts, owner: string): { uid: number; gid: number } {
  const [userName, groupName] = owner.split(":");
  const user = accounts.users.get(userName ?? "");
  if (!user) throw new Error(`owner ${JSON.stringify(owner)}: no user ${JSON.stringify(userName)} in the node's /etc/passwd`);
  if (groupName === undefined || groupName === "") return { uid: user.uid, gid: user.gid };
  const gid = accounts.groups.get(groupName);
  if (gid === undefined) throw new Error(`owner ${JSON.stringify(owner)}: no group ${JSON.stringify(groupName)} in the node's /etc/group`);
  return { uid: user.uid, gid };
}

/** Creates the directories of a path inside the root, each missing one owned by root 0755. */
export function mkdirInRoot(root: string, dir: string): string {
  const resolved = resolveInRoot(root, dir);
  fs.mkdirSync(resolved, { recursive: true, mode: 0o755 });
  return resolved;
}

/**
 * systemd-tmpfiles' `d`/`D` lines for volatile paths (/run, /tmp), which
 * systemd creates at boot and the chroot does not have.
 */
export function replayTmpfiles(root: string, accounts: Accounts): string[] {
  const created: string[] = [];
  for (const dir of ["/usr/lib/tmpfiles.d", "/etc/tmpfiles.d"]) {
    const resolved = resolveInRoot(root, dir);
    if (!fs.existsSync(resolved)) continue;
    for (const name of fs
      .readdirSync(resolved)
      .filter((n) => n.endsWith(".conf"))
      .sort()) {
      for (const raw of fs.readFileSync(path.join(resolved, name), "utf8").split("\n")) {
        const fields = raw.trim().split(/\s+/);
        if (fields.length < 2 || !["d", "D"].includes(fields[0])) continue;
        const target = fields[1];
        if (!target.startsWith("/run/") && !target.startsWith("/tmp/")) continue;
        const mode = fields[2] && fields[2] !== "-" ? parseInt(fields[2], 8) : 0o755;
        const user = fields[3] && fields[3] !== "-" ? fields[3] : "root";
        const group = fields[4] && fields[4] !== "-" ? fields[4] : "root";
        if (!accounts.users.has(user) || !accounts.groups.has(group)) continue;
        const hostPath = mkdirInRoot(root, target);
        const { uid, gid } = resolveOwner(accounts, `${user}:${group}`);
        fs.chownSync(hostPath, uid, gid);
        fs.chmodSync(hostPath, mode);
        created.push(target);
      }
    }
  }
  return created;
}

/**
 * A host root for the tools rootfs (the client, the application's host; the
 * WAN test's hosts): the mounts of mountRoot and the tmpfiles.d directories.
 */
export async function prepareRoot(host: HostLayout, rootfs: string): Promise<void> {
  await mountRoot(host, rootfs);
  replayTmpfiles(host.root, readAccounts(host.root));
}

/** Lab-only files for the client host: the cluster CA, a foreign CA's client certificate, the writer and the read-your-writes probe. */
export function prepareClient(client: HostLayout, files: { caCert: string; foreignCert: string; foreignKey: string; foreignCa: string }): void {
  const dir = mkdirInRoot(client.root, "/etc/pgha-lab");
  fs.copyFileSync(files.caCert, path.join(dir, "ca.crt"));
  fs.copyFileSync(files.foreignCa, path.join(dir, "foreign-ca.crt"));
  fs.copyFileSync(files.foreignCert, path.join(dir, "foreign-client.crt"));
  fs.copyFileSync(files.foreignKey, path.join(dir, "foreign-client.key"));
  fs.chmodSync(path.join(dir, "foreign-client.key"), 0o600);
  for (const script of ["writer.py", "read-your-writes.py"]) fs.copyFileSync(path.join(__dirname, "assets", script), path.join(dir, script));
}
