import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NodeTransport, RunResult } from "../../checks/transport";
import { unitFailedToSpawn, unitFailureLines } from "../../ops/restore";

/** A transport whose only command is `systemctl show`, answering with `shown`. */
function showing(shown: string): NodeTransport {
  const no = (): never => {
    throw new Error("not in this test");
  };
  return {
    kind: "fake",
    run: async (_node, argv): Promise<RunResult> => {
      assert.deepEqual(argv.slice(0, 2), ["systemctl", "show"]);
      return { code: 0, stdout: shown, stderr: "" };
    },
    spawn: no,
    readFile: no,
    startService: no,
    stopService: no,
    serviceActive: no,
    signalProcesses: no,
  };
}

describe("a failed backup unit", () => {
  it("counts as never spawned only when systemd failed it for resources, not when pgBackRest failed", async () => {
    assert.equal(await unitFailedToSpawn(showing("ActiveState=failed\nResult=resources\n"), "pg-seoul-1", "pgha-backup-full.service"), true);
    assert.equal(await unitFailedToSpawn(showing("ActiveState=failed\nResult=exit-code\n"), "pg-seoul-1", "pgha-backup-full.service"), false);
    assert.equal(await unitFailedToSpawn(showing("ActiveState=activating\nResult=resources\n"), "pg-seoul-1", "pgha-backup-full.service"), false);
  });

  it("names pgBackRest's error from the last run even when the successful repositories' long lines come after it", () => {
    const longOptions = `INFO: expire command begin 2.55.1: ${"--repo1-cipher-pass=<redacted> ".repeat(30)}`;
    const journal = [
      "Starting pgha-backup-diff.service - pgBackRest differential backup...",
      "2026-12-03 11:00:00.000 P00  ERROR: [058]: an older run's error",
      "pgha-backup-diff.service: Failed with result 'exit-code'.",
      "Starting pgha-backup-diff.service - pgBackRest differential backup...",
      "2026-12-03 12:06:09.217 P00  ERROR: [106]: new backup label '20261203-120022F_20261203-120608D' is not later than latest backup label '20261203-120145F'",
      "pgha-backup: the diff backup to repo1 failed",
      ...Array.from({ length: 20 }, (_, i) => `2026-12-03 12:06:1${i % 10}.000 P00   ${i % 2 ? "INFO: backup command end: completed successfully" : longOptions}`),
      "pgha-backup: failed: repo1",
      "pgha-backup-diff.service: Failed with result 'exit-code'.",
    ].join("\n");
    const lines = unitFailureLines(journal);
    assert.match(lines[0] ?? "", /ERROR: \[106\]: new backup label/);
    assert.ok(lines.includes("pgha-backup: the diff backup to repo1 failed"), lines.join("\n"));
    assert.ok(lines.includes("pgha-backup-diff.service: Failed with result 'exit-code'."));
    assert.ok(!lines.some((line) => line.includes("an older run's error")), "only the last run");
    assert.ok(lines.every((line) => line.length <= 301));
    assert.ok(lines.length <= 8, lines.join("\n"));
  });
});
