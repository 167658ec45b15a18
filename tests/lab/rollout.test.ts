/**
 * The rolling day-2 change (ops/rollout.ts) in the local lab, through the
 * lab's transport: the readiness checks as the AWS gate runs them, a no-op
 * rollout, then Patroni's ttl 20 → 25 and max_connections 100 → 150 (needs a
 * restart) rolled node by node while the writer writes through HAProxy; RPO
 * must be 0 and every node must run the change; then every leaf certificate
 * renewed (same CA) and rolled out the same way, after which every TLS
 * server must serve its new serial. Boots the lab and tears it down. Needs root and the rootfs; the lab is a singleton
 * (preflight takes /run/pgha-lab.lock, lab/lock.ts):
 *
 *   npm run test:lab:rollout
 *
 * The JSON report goes to PGHA_ROLLOUT_REPORT (default .lab/rollout-report.json).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { clearEnvCache } from "../../checks/cluster";
import { DEFAULT_STATE_DIR } from "../../lab/layout";
import { labContext, labDown, labUp, preflight, type LabContext } from "../../lab/lab";
import { changedLabPlan, renewalDrill, rolloutDrill, type RenewalDrillResult, type RolloutDrillResult } from "../../lab/rollout-drill";
import { waitHealthy } from "../../lab/runner";
import { verifyReadiness } from "../../checks/readiness";
import { awsAccess } from "../../ops/readiness";
import { runRollout, type RolloutReport } from "../../ops/rollout";

const STATE_DIR = DEFAULT_STATE_DIR;
const REPORT = process.env.PGHA_ROLLOUT_REPORT ?? path.join(process.cwd(), ".lab", "rollout-report.json");
const log = (line: string): void => void process.stderr.write(`  [rollout ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

describe("lab: rolling day-2 change with writes through HAProxy", { timeout: 14 * 60_000 }, () => {
  let lab: LabContext | undefined;
  let failure: Error | undefined;
  let preflightError: Error | undefined;
  const results: { boot?: Record<string, number>; noop?: RolloutReport; drill?: RolloutDrillResult; renewal?: RenewalDrillResult } = {};

  after(async () => {
    fs.mkdirSync(path.dirname(REPORT), { recursive: true });
    fs.writeFileSync(REPORT, JSON.stringify({ at: new Date().toISOString(), ...results }, null, 2));
    log(`report: ${REPORT}`);
    if (preflightError) return;
    const down = await labDown(STATE_DIR, log);
    assert.deepEqual(down.problems, [], `lab down left things behind: ${down.problems.join("; ")}`);
  });

  const requireLab = (): LabContext => {
    if (preflightError) throw new Error(`cannot run the lab here: ${preflightError.message}`);
    if (failure) throw new Error(`the lab did not come up: ${failure.message}`);
    if (!lab) throw new Error("the lab is not up");
    return lab;
  };

  test("preflight and up: the lab boots and becomes healthy", { timeout: 5 * 60_000 }, async () => {
    try {
      await preflight();
    } catch (error) {
      preflightError = error as Error;
      throw error;
    }
    try {
      const started = Date.now();
      const up = await labUp(STATE_DIR, log);
      lab = labContext(STATE_DIR);
      await waitHealthy(lab, 240_000);
      results.boot = { ...up.timings, upToHealthySeconds: (Date.now() - started) / 1000 };
    } catch (error) {
      failure = error as Error;
      throw error;
    }
  });

  test("the readiness checks as the AWS gate runs them (certificate probes from each HAProxy node) pass, and fail naming a stopped HAProxy", { timeout: 2 * 60_000 }, async () => {
    const current = requireLab();
    clearEnvCache();
    const access = awsAccess(current.plan, current.transport);
    const ready = await verifyReadiness(access);
    assert.deepEqual(
      ready.checks.filter((c) => !c.ok).map((c) => `${c.id}: ${c.detail}`),
      [],
    );
    const ids = ready.checks.map((c) => c.id);
    for (const id of ["topology", "replication", "lag", "etcd-health", "haproxy haproxy-1:5000", "haproxy haproxy-3:5002"]) assert.ok(ids.includes(id), `check ${id} ran`);
    assert.match(ready.checks.find((c) => c.id === "haproxy haproxy-2:5000")?.detail ?? "", new RegExp(`primary → ${ready.topology.leader} \\(certificate verified\\)`));
    // The lab's own SQL probes agree.
    const sql = await verifyReadiness(current.access);
    assert.ok(
      sql.ok,
      sql.checks
        .filter((c) => !c.ok)
        .map((c) => c.id)
        .join(", "),
    );
    // Control: HAProxy stopped on one node → exactly that node's ports fail, and whichever Prometheus has scraped
    // since names that HAProxy's exporter as down (and nothing else).
    await current.transport.stopService("haproxy-2", "haproxy.service");
    try {
      const broken = await verifyReadiness(access);
      assert.equal(broken.ok, false);
      const failing = broken.checks.filter((c) => !c.ok);
      assert.deepEqual(
        failing
          .filter((c) => !c.id.startsWith("prometheus "))
          .map((c) => c.id)
          .sort(),
        ["haproxy haproxy-2:5000", "haproxy haproxy-2:5001", "haproxy haproxy-2:5002"],
      );
      for (const check of failing.filter((c) => c.id.startsWith("prometheus "))) assert.equal(check.detail, "down: haproxy/haproxy-2:8405", check.id);
    } finally {
      await current.transport.startService("haproxy-2", "haproxy.service");
    }
    await waitHealthy(current, 60_000);
  });

  test(
    "a rollout of the unchanged plan does nothing (the files the lab booted are the rendered ones, every secret file matches its parameter)",
    { timeout: 2 * 60_000 },
    async () => {
      const current = requireLab();
      // Secrets are the nodes' own SSM reads (instance role), as on AWS.
      const report: RolloutReport = await runRollout({ access: { ...current.access, secretSource: { args: [] } }, log, healthBudgetMs: 60_000, pollMs: 1000 });
      results.noop = report;
      assert.deepEqual(report.patch, {});
      assert.deepEqual(report.steps, []);
    },
  );

  test("ttl 20 → 25 and max_connections 100 → 150 roll node by node: writes go on through HAProxy, RPO 0, every node changed", { timeout: 5 * 60_000 }, async () => {
    const current = requireLab();
    assert.equal(current.plan.config.patroni.ttl, 20);
    const desired = changedLabPlan({ patroni: { ttl: 25, parameters: { max_connections: 150 } } });
    const drill = await rolloutDrill(current, desired, { patroni: { ttl: 25 }, parameters: { max_connections: "150" } }, log);
    results.drill = drill;
    const w = drill.writes;
    log(
      `writes: ${w.acked} acknowledged, ${w.unknownOutcome} outcome unknown, longest gap ${w.maxGapSeconds?.toFixed(2)} s, RPO ${w.rpoMissing}, split brain ${w.splitBrainAcks}, ${w.ackedAfterLastStep} after the last step; primary ${drill.oldPrimary} → ${drill.newPrimary}`,
    );
    for (const step of drill.report?.steps ?? []) log(`  +${step.atSeconds.toFixed(1)} s ${step.kind}${step.node ? ` ${step.node}` : ""}: ${step.detail}`);
    assert.deepEqual(drill.problems, []);
    assert.equal(w.rpoMissing, 0);
    assert.equal(w.splitBrainAcks, 0);
    assert.ok(w.ackedAfterLastStep >= 20, "writes continued after the rollout");
    // A bound on unavailability, not a speed figure: the switchover's gap is ≈ 2 s; 30 s is beyond a failover
    // (ttl 20 s), so only a rollout that took the primary away without a switchover fails it, loaded or not.
    assert.ok((w.maxGapSeconds ?? Infinity) < 30, `longest write gap ${w.maxGapSeconds} s`);

    // The order: the patch, replicas, a switchover away from the old primary, the old primary last.
    const report = drill.report as RolloutReport;
    const steps = report.steps.map((s) => (s.kind === "apply" ? `apply ${s.node}` : s.kind));
    const old = drill.oldPrimary as string;
    assert.equal(steps[0], "patch");
    const switchAt = steps.indexOf("switchover");
    assert.ok(switchAt > 0, `a switchover happened: ${steps.join(", ")}`);
    assert.deepEqual(report.switchover?.from, old);
    assert.equal(steps.at(-1), `apply ${old}`, "the former primary was done last");
    const replicasBefore = steps.slice(1, switchAt);
    assert.equal(replicasBefore.length, 2, `both replicas before the switchover: ${steps.join(", ")}`);
    assert.ok(!replicasBefore.includes(`apply ${old}`));
    assert.equal(drill.effects.length, 3);
  });

  test(
    "every leaf certificate renewed (same CA): the rollout fetches and reloads node by node with writes through HAProxy; every TLS server then serves its new serial, RPO 0",
    { timeout: 5 * 60_000 },
    async () => {
      const current = requireLab();
      // The plan the cluster runs after the previous test: the renewal must change nothing else.
      const renewal = await renewalDrill(current, changedLabPlan({ patroni: { ttl: 25, parameters: { max_connections: 150 } } }), log);
      results.renewal = renewal;
      const drill = renewal.drill as RolloutDrillResult;
      const w = drill.writes;
      log(
        `renewal: ${renewal.renewed.length} certificates; rollout ${drill.report?.seconds.toFixed(1)} s; writes: ${w.acked} acknowledged, ${w.unknownOutcome} outcome unknown, longest gap ${w.maxGapSeconds?.toFixed(2)} s, RPO ${w.rpoMissing}, split brain ${w.splitBrainAcks}, ${w.ackedAfterLastStep} after the last step; primary ${drill.oldPrimary} → ${drill.newPrimary}`,
      );
      for (const step of drill.report?.steps ?? []) log(`  +${step.atSeconds.toFixed(1)} s ${step.kind}${step.node ? ` ${step.node}` : ""}: ${step.detail}`);
      for (const s of renewal.servedAfter) log(`  ${s.node} ${s.what} ${s.port}: ${renewal.serials[s.certificate]?.before} → ${s.serial ?? s.error}`);
      for (const h of renewal.haproxyAfter) log(`  ${h.node} HAProxy check certificate loaded: ${renewal.serials[h.certificate]?.before} → ${h.serial ?? h.error}`);
      assert.deepEqual(renewal.problems, []);
      assert.equal(renewal.renewed.length, current.plan.certificates.length);
      // Every TLS server was probed before and after, and now serves the renewed serial (not the old one).
      const dbNodes = current.plan.nodes.filter((n) => n.roles.has("postgres")).length;
      assert.equal(renewal.servedAfter.length, 4 * dbNodes);
      for (const s of renewal.servedAfter) {
        const serial = renewal.serials[s.certificate];
        assert.ok(serial && serial.before !== serial.after, s.certificate);
        assert.equal(s.serial, serial?.after, `${s.node} ${s.what}`);
      }
      for (const h of renewal.haproxyAfter) assert.equal(h.serial, renewal.serials[h.certificate]?.after, `${h.node} HAProxy`);
      assert.equal(renewal.topologyAfter?.syncStandbys.length, 1);
      assert.ok(renewal.topologyAfter?.leader);
      assert.equal(w.rpoMissing, 0);
      assert.equal(w.splitBrainAcks, 0);
      assert.ok(w.ackedAfterLastStep >= 20, "writes continued after the rollout");
      // One step per node, replicas first, the leader last, and no switchover (a reload does not restart PostgreSQL).
      const report = drill.report as RolloutReport;
      assert.deepEqual(report.patch, {});
      assert.equal(report.switchover, undefined);
      const applied = report.steps.map((s) => `${s.kind} ${s.node}`);
      assert.deepEqual([...applied].sort(), current.plan.nodes.map((n) => `apply ${n.name}`).sort());
      assert.equal(applied.at(-1), `apply ${drill.oldPrimary}`);
      assert.equal(drill.newPrimary, drill.oldPrimary);
    },
  );
});
