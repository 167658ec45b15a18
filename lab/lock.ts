import * as fs from "node:fs";

/**
 * The lab is a singleton: its namespaces (pgha-*), mounts and state directory
 * have fixed names, so two lab commands at once break each other (one's `down`
 * removes the other's nodes mid-drill). Every lab command and lab test file
 * holds this lock while it runs; a second one fails at once, naming the holder.
 */
export const LAB_LOCK_PATH = "/run/pgha-lab.lock";

interface LockOwner {
  pid: number;
  what: string;
  since: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readOwner(lockPath: string): LockOwner | undefined {
  try {
    return JSON.parse(fs.readFileSync(lockPath, "utf8")) as LockOwner;
  } catch {
    return undefined;
  }
}

/**
 * Takes the lab lock for this process, or throws one line naming the holder.
 * A lock left by a process that no longer exists is taken over. Returns the
 * release function (also run at process exit).
 */
export function acquireLabLock(what: string, lockPath = LAB_LOCK_PATH): () => void {
  const mine: LockOwner = { pid: process.pid, what, since: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(lockPath, JSON.stringify(mine), { flag: "wx", mode: 0o644 });
      const release = (): void => {
        if (readOwner(lockPath)?.pid === process.pid) fs.rmSync(lockPath, { force: true });
      };
      process.once("exit", release);
      return release;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const owner = readOwner(lockPath);
    if (owner?.pid === process.pid) return () => undefined;
    if (owner && alive(owner.pid)) {
      throw new Error(`the lab is in use by pid ${owner.pid} (${owner.what}, since ${owner.since}); wait for it to end (lock ${lockPath})`);
    }
    if (!owner && Date.now() - (fs.statSync(lockPath, { throwIfNoEntry: false })?.mtimeMs ?? 0) < 2000) {
      throw new Error(`the lab is being locked by another process right now; try again (lock ${lockPath})`);
    }
    // Stale: its process is gone (or it was left unreadable long ago). Remove and retry.
    fs.rmSync(lockPath, { force: true });
  }
  throw new Error(`could not take the lab lock ${lockPath}`);
}
