import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { acquireLabLock } from "../../lab/lock";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgha-lock-"));

/** Tries the lock from another process (the way a second `npm run lab` would). */
function tryFromAnotherProcess(lockPath: string): { code: number | null; stderr: string } {
  const script = `require("./lab/lock").acquireLabLock("second", ${JSON.stringify(lockPath)}); console.log("took it");`;
  const result = spawnSync(process.execPath, ["--import", "tsx", "-e", script], { cwd: path.join(__dirname, "..", ".."), encoding: "utf8" });
  return { code: result.status, stderr: result.stderr };
}

test("lab lock: a second lab process is refused with one line naming the holder; the lock is free again after release", () => {
  const lockPath = path.join(dir, "held.lock");
  const release = acquireLabLock("npm run lab -- drill", lockPath);
  const second = tryFromAnotherProcess(lockPath);
  assert.notEqual(second.code, 0);
  assert.match(second.stderr, new RegExp(`the lab is in use by pid ${process.pid} \\(npm run lab -- drill, since `));
  assert.doesNotThrow(() => {
    acquireLabLock("same process again", lockPath)();
  }, "the holder may take it again");
  release();
  assert.equal(fs.existsSync(lockPath), false);
  assert.equal(tryFromAnotherProcess(lockPath).code, 0);
});

test("lab lock: a lock left by a process that is gone is taken over", () => {
  const lockPath = path.join(dir, "stale.lock");
  const gone = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" });
  fs.writeFileSync(lockPath, JSON.stringify({ pid: Number(gone.stdout.trim()), what: "crashed run", since: "2026-01-01T00:00:00Z" }));
  const release = acquireLabLock("after a crash", lockPath);
  assert.equal(JSON.parse(fs.readFileSync(lockPath, "utf8")).pid, process.pid);
  release();
});
