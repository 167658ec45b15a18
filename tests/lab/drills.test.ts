/**
 * The lab end to end: boot the rendered configuration of every node in
 * network namespaces, verify it, run the seven failover drills, tear it down.
 * Needs root and the Debian 13 rootfs (`npm run setup`); without them it
 * FAILS with the reason, it never skips.
 *
 * PGHA_LAB_REPEAT (default 1) repetitions per drill; the JSON report goes to
 * PGHA_LAB_REPORT (default .lab/report.json).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { clearEnvCache } from "../../lab/cluster";
import { DRILLS, prepareDrills, restoreBaseline, summarise, type DrillOutcome, type DrillSummary } from "../../lab/drills";
import { DEFAULT_STATE_DIR } from "../../lab/layout";
import { labContext, labDown, labUp, preflight, type LabContext } from "../../lab/lab";
import { DRILL_COLUMNS, drillContext, summaryTable, waitHealthy } from "../../lab/runner";
import { LiveTable } from "../../lab/table";
import { verifyCluster, type Verification } from "../../lab/verify";

const STATE_DIR = DEFAULT_STATE_DIR;
const REPEAT = Number(process.env.PGHA_LAB_REPEAT ?? "1");
const REPORT = process.env.PGHA_LAB_REPORT ?? path.join(process.cwd(), ".lab", "report.json");
const log = (line: string): void => void process.stderr.write(`  [lab ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

describe("local lab: boot, verify, drill, tear down", { timeout: 19 * 60_000 }, () => {
  let lab: LabContext | undefined;
  let upError: Error | undefined;
  const boot: Record<string, number> = {};
  let verification: Verification | undefined;
  const summaries: DrillSummary[] = [];
  const table = new LiveTable(DRILL_COLUMNS);

  let preflightError: Error | undefined;

  after(async () => {
    const report = {
      ok: summaries.length === DRILLS.length && summaries.every((s) => s.ok) && !!verification?.ok,
      at: new Date().toISOString(),
      machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release() },
      boot,
      repeat: REPEAT,
      verification,
      drills: summaries,
    };
    fs.mkdirSync(path.dirname(REPORT), { recursive: true });
    fs.writeFileSync(REPORT, JSON.stringify(report, null, 2));
    if (summaries.length) log(`\n${summaryTable(summaries)}`);
    log(`report: ${REPORT}`);
    if (preflightError) return;
    const down = await labDown(STATE_DIR, log);
    assert.deepEqual(down.problems, [], `lab down left things behind: ${down.problems.join("; ")}`);
  });

  function requireLab(): LabContext {
    if (preflightError) throw new Error(`cannot run the lab here: ${preflightError.message}`);
    if (upError) throw new Error(`the lab did not come up: ${upError.message}`);
    if (!lab) throw new Error("the lab is not up");
    return lab;
  }

  // Not a hook: a machine without root or without the rootfs must show FAILED tests with the reason, never skipped or cancelled ones.
  test("preflight: running as root, the Debian 13 rootfs is built", async () => {
    try {
      assert.ok(Number.isInteger(REPEAT) && REPEAT >= 1, `PGHA_LAB_REPEAT must be a positive integer, got ${process.env.PGHA_LAB_REPEAT}`);
      await preflight();
    } catch (error) {
      preflightError = error as Error;
      throw error;
    }
  });

  test("up: every node boots from its own rendered user-data and the cluster becomes healthy", { timeout: 6 * 60_000 }, async () => {
    if (preflightError) throw new Error(`cannot run the lab here: ${preflightError.message}`);
    const started = Date.now();
    try {
      const up = await labUp(STATE_DIR, log);
      Object.assign(boot, up.timings);
      lab = labContext(STATE_DIR);
      verification = await waitHealthy(lab, 240_000);
      boot.upToHealthySeconds = (Date.now() - started) / 1000;
      log(`healthy ${boot.upToHealthySeconds.toFixed(1)} s after up started`);
    } catch (error) {
      upError = error as Error;
      throw error;
    }
  });

  test("status: one Leader, one Sync Standby, streaming replicas, etcd mTLS health, HAProxy routing, TLS enforced", { timeout: 2 * 60_000 }, async () => {
    const current = requireLab();
    clearEnvCache();
    verification = await verifyCluster(current.access);
    const failed = verification.checks.filter((c) => !c.ok).map((c) => `${c.id}: ${c.detail}`);
    assert.deepEqual(failed, [], `failing checks:\n${failed.join("\n")}`);
    const topology = verification.topology;
    assert.ok(topology.leader && topology.syncStandby, "a leader and a sync standby");
    assert.equal(topology.replicas.length, current.plan.nodes.filter((n) => n.roles.has("postgres")).length - 2);
    for (const id of ["tls: etcd", "tls: patroni", "tls: postgres"]) {
      assert.ok(verification.checks.some((c) => c.id.startsWith(id)), `TLS probes for ${id} ran`);
    }
  });

  for (const [index, drill] of DRILLS.entries()) {
    test(`drill ${index + 1}: ${drill.title}`, { timeout: 4 * 60_000 * REPEAT }, async () => {
      const current = requireLab();
      let row = -1;
      const ctx = drillContext(current, (phase) => table.update(row, { state: phase }), path.join(STATE_DIR, "drills.log"));
      if (index === 0) await prepareDrills(ctx);
      const outcomes: DrillOutcome[] = [];
      for (let rep = 1; rep <= REPEAT; rep++) {
        row = table.add({ n: String(index + 1), drill: drill.id, rep: String(rep), state: "starting" });
        let result: DrillOutcome;
        try {
          result = await drill.run(ctx, rep);
        } catch (error) {
          result = { drill: drill.id, repetition: rep, ok: false, problems: [(error as Error).message], rpoMissing: 0, splitBrainAcks: 0, acked: 0, unknownOutcome: 0, unsafeAcks: 0, maxGapAfterSeconds: 0, details: {} };
          await restoreBaseline(ctx).catch((e: Error) => result.problems.push(`restore failed: ${e.message}`));
        }
        outcomes.push(result);
        table.update(row, {
          state: result.ok ? "ok" : `FAIL: ${result.problems.join("; ")}`,
          rto: result.rtoSeconds?.toFixed(2) ?? "-",
          rpo: String(result.rpoMissing),
          split: String(result.splitBrainAcks),
          primary: result.oldPrimary ? `${result.oldPrimary}→${result.newPrimary ?? "?"}` : "",
          restore: result.restoreSeconds?.toFixed(1) ?? "-",
        });
      }
      const summary = summarise(drill, outcomes);
      summaries.push(summary);
      for (const o of outcomes) {
        assert.equal(o.rpoMissing, 0, `${drill.id} #${o.repetition}: RPO ${o.rpoMissing} acknowledged commits lost`);
        assert.equal(o.splitBrainAcks, 0, `${drill.id} #${o.repetition}: split brain (${o.splitBrainAcks} writes acknowledged by the old primary after promotion)`);
        assert.ok(o.rtoSeconds !== undefined, `${drill.id} #${o.repetition}: writes never resumed`);
        assert.deepEqual(o.problems, [], `${drill.id} #${o.repetition}: ${o.problems.join("; ")}`);
      }
    });
  }
});
