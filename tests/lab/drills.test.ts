/**
 * The lab end to end: boot every node as a machine (systemd-nspawn, real
 * systemd and cloud-init on its rendered user-data, apt from the lab mirror,
 * secrets from the lab's SSM endpoint) in its own network namespace, verify
 * the cluster, run the nine failover drills (the seven, the primary's reboot, the cut of only the primary ↔ sync standby link),
 * on the LAN the five backup drills (lab/backup-drills.ts), and the multi-region drills (lab/region-drills.ts), tear it down. Needs root, the
 * Debian 13 rootfs and the machines' image and mirror (`npm run setup`);
 * without them it FAILS with the reason, it never skips.
 *
 * PGHA_LAB_REPEAT (default 1) repetitions per drill; the JSON report goes to
 * PGHA_LAB_REPORT (default .lab/report.json, .lab/report-wan.json with the WAN).
 *
 * PGHA_LAB_WAN=1 runs it all over the WAN emulator (lab/wan.ts: inter-region
 * packets delayed by the plan's RTTs; PGHA_LAB_WAN_JITTER_MS,
 * PGHA_LAB_WAN_LOSS_PERCENT) and adds, before the drills, the WAN proof (ping
 * and TCP RTT between every pair of regions = configured, never below it and
 * at most 3 ms + 5 % above, < 3 ms inside a region, the partition switch) and
 * the measurements: single-client commit latency, never below the RTT to the
 * sync standby, sync vs async at 1/8/32 clients
 * (PGHA_LAB_WAN_PGBENCH_SECONDS per point, default 15), all inside an etcd
 * stability window of PGHA_LAB_WAN_STEADY_SECONDS (default 120) that must see
 * no leader change.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { clearEnvCache } from "../../checks/cluster";
import { prometheusAlerts, promQuery } from "../../checks/monitoring";
import { dashboardQueries, grafanaDashboard } from "../../cloud-init/dashboard";
import { monitoringDropIns } from "../../cloud-init/monitoring";
import { nodeUnits, PATH_MTU_UNIT } from "../../cloud-init/systemd";
import { ALERT_NAMES } from "../../cloud-init/alert-rules";
import { NODE_PATHS, nodesWithRole } from "../../plan";
import { DRILLS, prepareDrills, summarise, type DrillOutcome, type DrillSummary } from "../../lab/drills";
import { BACKUP_DRILLS } from "../../lab/backup-drills";
import { REGION_DRILLS } from "../../lab/region-drills";
import { DEFAULT_STATE_DIR } from "../../lab/layout";
import { labContext, labDown, labUp, preflight, type LabContext } from "../../lab/lab";
import { DRILL_COLUMNS, drillContext, drillNumber, outcomeRow, runDrill, summaryTable, waitHealthy } from "../../lab/runner";
import { LiveTable } from "../../lab/table";
import { cachedRootfs, screenshotHtml } from "../../lab/chromium";
import { renderDrillReport, REPORT_SCREENSHOT, TIMELINE_COLOURS, readLabReport } from "../../lab/report";
import { PNG } from "pngjs";
import type { Verification } from "../../checks/readiness";
import { verifyCluster } from "../../lab/verify";
import { alertNotifications, type AlertNotification } from "../../lab/infra";
import { proofTable, proveWan, readWanSpec, wanOptionsFromEnv, type WanOptions, type WanProof } from "../../lab/wan";
import { measurementsMarkdown, measureWan, type WanMeasurements } from "../../lab/wan-measure";

const STATE_DIR = DEFAULT_STATE_DIR;
const REPEAT = Number(process.env.PGHA_LAB_REPEAT ?? "1");
let WAN: WanOptions | undefined;
let wanError: Error | undefined;
try {
  WAN = wanOptionsFromEnv();
} catch (error) {
  wanError = error as Error;
}
const STEADY_SECONDS = Number(process.env.PGHA_LAB_WAN_STEADY_SECONDS ?? "120");
const PGBENCH_SECONDS = Number(process.env.PGHA_LAB_WAN_PGBENCH_SECONDS ?? "15");
/**
 * The failover drills, then (on the LAN) the backup drills, then the multi-region drills. The backup drills do not
 * run over the WAN: the lab's S3 endpoint sits behind the router, outside the emulated regions, so the WAN would
 * change nothing they measure.
 */
const DRILLS_HERE = [...DRILLS, ...(WAN ? [] : BACKUP_DRILLS), ...REGION_DRILLS];
const REPORT = process.env.PGHA_LAB_REPORT ?? path.join(process.cwd(), ".lab", WAN ? "report-wan.json" : "report.json");
const log = (line: string): void => void process.stderr.write(`  [lab ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

describe("local lab: boot, verify, drill, tear down", { timeout: 45 * 60_000 }, () => {
  let lab: LabContext | undefined;
  let upError: Error | undefined;
  const boot: Record<string, number> = {};
  let verification: Verification | undefined;
  const summaries: DrillSummary[] = [];
  const table = new LiveTable(DRILL_COLUMNS);
  let wanProof: WanProof | undefined;
  let wanMeasurements: WanMeasurements | undefined;
  /** Seconds from the fault to its page on the SNS topic, and from the repair to the resolved page. */
  let alertNotification: Record<string, unknown> | undefined;

  let preflightError: Error | undefined;
  let upStarted = false;

  const currentReport = () => ({
    ok:
      summaries.length === DRILLS_HERE.length &&
      summaries.every((s) => s.ok) &&
      verification?.ok === true &&
      (!WAN || (wanProof?.ok === true && wanMeasurements?.commitLatency.ok === true && wanMeasurements.etcd.ok)),
    network: WAN ? "wan" : "lan",
    wan: WAN ? { spec: lab ? readWanSpec(lab.layout) : undefined, proof: wanProof, measurements: wanMeasurements } : undefined,
    at: new Date().toISOString(),
    machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release() },
    boot,
    alertNotification,
    repeat: REPEAT,
    verification,
    drills: summaries,
  });

  after(async () => {
    // Filtered so that `up` never ran: no lab of ours, no report to write (another run's lab and report stay untouched).
    if (!upStarted && !preflightError) return;
    const report = currentReport();
    fs.mkdirSync(path.dirname(REPORT), { recursive: true });
    fs.writeFileSync(REPORT, JSON.stringify(report, null, 2));
    if (summaries.length) log(`\n${summaryTable(summaries)}`);
    log(`report: ${REPORT}`);
    // Only tear down a lab this file started to bring up (a name filter that skips `up` must not kill someone else's lab).
    if (preflightError || !upStarted) return;
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
      if (wanError) throw wanError;
      assert.ok(Number.isFinite(STEADY_SECONDS) && STEADY_SECONDS >= 10, `PGHA_LAB_WAN_STEADY_SECONDS must be a number >= 10, got ${process.env.PGHA_LAB_WAN_STEADY_SECONDS}`);
      assert.ok(
        Number.isInteger(PGBENCH_SECONDS) && PGBENCH_SECONDS >= 1,
        `PGHA_LAB_WAN_PGBENCH_SECONDS must be a positive integer, got ${process.env.PGHA_LAB_WAN_PGBENCH_SECONDS}`,
      );
      await preflight();
    } catch (error) {
      preflightError = error as Error;
      throw error;
    }
  });

  test("up: every node boots from its own rendered user-data and the cluster becomes healthy", { timeout: 25 * 60_000 }, async () => {
    if (preflightError) throw new Error(`cannot run the lab here: ${preflightError.message}`);
    const started = Date.now();
    upStarted = true;
    try {
      const up = await labUp(STATE_DIR, log, { wan: WAN });
      Object.assign(boot, up.timings);
      const failed = up.machines.filter((m) => m.status !== "done").map((m) => `${m.node}: cloud-init ${m.status}\n${m.cloudInit}`);
      assert.deepEqual(failed, [], "cloud-init finished cleanly on every machine");
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
      assert.ok(
        verification.checks.some((c) => c.id.startsWith(id)),
        `TLS probes for ${id} ran`,
      );
    }
  });

  test("first boot: every service started once, by runcmd with its rendered configuration; no package started one before", { timeout: 2 * 60_000 }, async () => {
    const current = requireLab();
    const wrong: string[] = [];
    for (const node of current.plan.nodes) {
      // The long-running services (pgha-path-mtu and the certificate metrics are oneshots, started by runcmd alone).
      const services = [
        ...nodeUnits(current.plan, node)
          .filter((u) => u.name !== PATH_MTU_UNIT)
          .map((u) => u.name),
        ...monitoringDropIns(current.plan, node).map((d) => d.unit),
      ];
      const journal = (await current.transport.run(node.name, ["journalctl", "--boot", "_PID=1", "--output=cat", "--no-pager"], { timeoutMs: 60_000 })).stdout.split("\n");
      for (const unit of services) {
        const starts = journal.filter((line) => line.startsWith(`Started ${unit} `)).length;
        if (starts !== 1) wrong.push(`${node.name}: ${unit} started ${starts} times`);
      }
      const output = await current.transport.readFile(node.name, "/var/log/cloud-init-output.log");
      const denied = output.split("\n").filter((line) => line.includes(`${NODE_PATHS.policyRcD} returned 101`)).length;
      if (denied === 0) wrong.push(`${node.name}: cloud-init-output.log shows no start refused by the first boot's policy-rc.d`);
      log(`${node.name}: ${services.length} services started once each; ${denied} package starts refused during the install`);
    }
    assert.deepEqual(wrong, []);
  });

  test("monitoring: no alert fires on the healthy cluster, and every dashboard panel's query returns data", { timeout: 2 * 60_000 }, async () => {
    const current = requireLab();
    // verifyCluster (status, above) already required every target up on every region's Prometheus.
    for (const server of nodesWithRole(current.plan, "haproxy")) {
      const firing = (await prometheusAlerts(current.access, server.name)).filter((a) => a.state === "firing");
      assert.deepEqual(
        firing.map((a) => `${a.name} ${JSON.stringify(a.labels)}`),
        [],
        `${server.name}: alerts firing on a healthy cluster`,
      );
    }
    const empty: string[] = [];
    for (const query of dashboardQueries(grafanaDashboard(current.plan))) {
      const samples = await promQuery(current.access, "haproxy-2", query.expr);
      if (samples.length === 0) empty.push(`${query.panel}: ${query.expr}`);
    }
    assert.deepEqual(empty, [], "dashboard queries that returned no data from the lab's Prometheus");
  });

  test("lab CLI beside the running lab: exec patronictl list, logs patroni, psql through another region's HAProxy", { timeout: 60_000 }, async () => {
    const current = requireLab();
    // The commands people type (lab/README.md), run as they would be; they take no lab lock, which this file holds.
    const npm = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        execFile(
          "npm",
          ["run", "lab", "--", ...args],
          { cwd: path.join(__dirname, "..", ".."), env: { ...process.env, PGHA_LAB_DIR: STATE_DIR }, timeout: 50_000 },
          (error, stdout, stderr) => {
            resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
          },
        );
      });
    const [list, logs, psql] = await Promise.all([
      npm(["exec", "pg-seoul-1", "--", "patronictl", "list"]),
      npm(["logs", "pg-seoul-1", "patroni"]),
      npm(["psql", "--via", "haproxy-2", "--", "-c", "select 1"]),
    ]);
    assert.equal(list.code, 0, `exec patronictl list: ${list.stderr}`);
    for (const node of current.plan.nodes.filter((n) => n.roles.has("postgres"))) assert.match(list.stdout, new RegExp(`\\b${node.name}\\b`), list.stdout);
    assert.match(list.stdout, /\bLeader\b/, list.stdout);
    assert.match(list.stdout, /\bSync Standby\b/, list.stdout);
    assert.equal(logs.code, 0, `logs: ${logs.stderr}`);
    assert.match(logs.stdout, / INFO: /, `no Patroni line in the last 100 of pg-seoul-1's patroni log:\n${logs.stdout}`);
    assert.equal(psql.code, 0, `psql: ${psql.stderr}`);
    assert.match(psql.stdout, /^\s*1\s*$/m, psql.stdout);
    assert.match(psql.stdout, /\(1 row\)/, psql.stdout);
  });

  if (WAN) {
    test(
      "wan proof: ping and TCP RTT between every pair of regions = configured (never below, ≤ 3 ms + 5 % above), < 3 ms inside a region; the partition switch cuts and heals",
      { timeout: 3 * 60_000 },
      async () => {
        const current = requireLab();
        wanProof = await proveWan(current.plan, current.layout, current.transport, { log });
        log(`\n${proofTable(wanProof)}`);
        const failed = [
          ...wanProof.rows.filter((r) => !r.ok).map((r) => `${r.kind} ${r.from} → ${r.to}: median ${r.rtt.medianMs} ms, configured ${r.expectedMs} ms`),
          ...wanProof.partition.filter((p) => !p.ok).map((p) => `partition ${p.pair}: ${p.repliesWhileCut} replies while cut, ${p.repliesAfterHeal}/3 after heal`),
        ];
        assert.deepEqual(failed, [], `WAN proof failed:\n${failed.join("\n")}`);
        assert.equal(wanProof.delayLine?.stats.overflow ?? 0, 0, "the delay line overflowed");
      },
    );

    test(
      `wan measurements: commits wait at least the sync standby's RTT, sync vs async at 1/8/32 clients, no etcd leader change over ${STEADY_SECONDS} s of writes`,
      { timeout: (STEADY_SECONDS + 12 * PGBENCH_SECONDS + 240) * 1000 },
      async () => {
        const current = requireLab();
        clearEnvCache();
        wanMeasurements = await measureWan(current, { steadySeconds: STEADY_SECONDS, pgbenchSeconds: PGBENCH_SECONDS, progress: log });
        log(`\n${measurementsMarkdown(wanMeasurements)}`);
        const c = wanMeasurements.commitLatency;
        // Correctness: a synchronous commit waits at least the round trip to the sync standby. How close it
        // came to the model (RTT + the client's path) is a figure in the log, not an assertion.
        assert.ok(c.ok, `single-client commit latency median ${c.commit.latency.medianMs} ms, below the primary → sync standby RTT ${c.primaryToSyncPing.medianMs} ms`);
        assert.deepEqual(wanMeasurements.etcd.problems, [], `etcd/Patroni not stable under load: ${wanMeasurements.etcd.problems.join("; ")}`);
      },
    );
  }

  for (const [index, drill] of DRILLS_HERE.entries()) {
    const failover = !BACKUP_DRILLS.includes(drill);
    const number = drillNumber(drill);
    // A backup drill holds a failover or a whole restore, a baseline, backups and then the repositories' verify; drill 13
    // also waits up to 180 s for the cut-short backup to end. CI's loaded run of drill 13 took longer than 4 minutes.
    test(`drill ${number}: ${drill.title}`, { timeout: (failover ? 4 : 10) * 60_000 * REPEAT }, async () => {
      const current = requireLab();
      let row = -1;
      const ctx = drillContext(
        current,
        (phase) => {
          table.update(row, { state: phase });
        },
        path.join(STATE_DIR, "drills.log"),
      );
      if (index === 0) await prepareDrills(ctx);
      const outcomes: DrillOutcome[] = [];
      for (let rep = 1; rep <= REPEAT; rep++) {
        row = table.add({ n: String(number), drill: drill.id, rep: String(rep), state: "starting" });
        const result = await runDrill(drill, ctx, rep);
        outcomes.push(result);
        table.update(row, outcomeRow(result));
      }
      const summary = summarise(drill, outcomes);
      summaries.push(summary);
      for (const o of outcomes) {
        assert.equal(o.rpoMissing, 0, `${drill.id} #${o.repetition}: RPO ${o.rpoMissing} acknowledged commits lost`);
        assert.equal(o.splitBrainAcks, 0, `${drill.id} #${o.repetition}: split brain (${o.splitBrainAcks} writes acknowledged by the old primary after promotion)`);
        // A backup drill's writes stop on purpose (PITR) or it has no outage (a replica rebuilt): its problems say.
        if (failover && drill.measuresRto !== false) assert.ok(o.rtoSeconds !== undefined, `${drill.id} #${o.repetition}: writes never resumed`);
        assert.deepEqual(o.problems, [], `${drill.id} #${o.repetition}: ${o.problems.join("; ")}`);
      }
      if (drill.id === "primary-reboot") {
        // Drill e: a reboot is a clean shutdown (Patroni hands the leader key over), so writes resume no later than
        // after the primary's hard loss measured in this same run (which waits out the leader key's TTL).
        const hostLoss = summaries.find((s) => s.id === "primary-host-loss")?.rto.medianSeconds;
        assert.ok(hostLoss !== undefined, "the primary-host-loss drill ran before, so its RTO is the bound");
        for (const o of outcomes)
          assert.ok((o.rtoSeconds ?? Infinity) <= hostLoss, `primary reboot #${o.repetition}: RTO ${String(o.rtoSeconds)} s, more than the host loss's ${String(hostLoss)} s`);
      }
    });
  }
  test(
    "alert notifications: an etcd member stopped until the page arrives through the stack's SNS topic (FIRING), then started again (RESOLVED)",
    { timeout: 6 * 60_000 },
    async () => {
      const current = requireLab();
      const { alertTopicArn: topic, groupIntervalSeconds } = current.plan.config.monitoring;
      assert.ok(topic, "the lab stack names an alert topic");
      // A replica's member: quorum holds and the primary is untouched. The drills' own faults are often shorter than
      // Alertmanager's group_wait, and a fault that heals within it is rightly never paged; this one lasts until the page.
      const victim = (await verifyCluster(current.access)).topology.replicas[0];
      assert.ok(victim, "a replica");
      const alert = `${ALERT_NAMES.etcdMemberDown} `;
      const waitFor = async (status: "FIRING" | "RESOLVED", after: string, seconds: number): Promise<AlertNotification | undefined> => {
        const deadline = Date.now() + seconds * 1000;
        for (;;) {
          const found = (await alertNotifications(current.layout, topic)).find((n) => n.subject.startsWith(`[${status}] ${alert}`) && n.timestamp >= after);
          if (found || Date.now() > deadline) return found;
          await new Promise((resolve) => setTimeout(resolve, 2000));
        }
      };
      const stoppedAt = new Date();
      await current.transport.run(victim, ["systemctl", "stop", "etcd.service"], { timeoutMs: 60_000 });
      let firing: AlertNotification | undefined;
      try {
        firing = await waitFor("FIRING", stoppedAt.toISOString(), 180);
      } finally {
        await current.transport.run(victim, ["systemctl", "start", "etcd.service"], { timeoutMs: 120_000 });
      }
      const startedAt = new Date();
      assert.ok(firing, `no [FIRING] ${alert}notification reached ${topic} within 180 s of stopping etcd on ${victim}`);
      const resolved = await waitFor("RESOLVED", startedAt.toISOString(), groupIntervalSeconds + 90);
      const seconds = (n: AlertNotification, from: Date): string => ((Date.parse(n.timestamp) - from.getTime()) / 1000).toFixed(1);
      assert.ok(resolved, `no [RESOLVED] ${alert}notification within ${groupIntervalSeconds + 90} s of starting etcd on ${victim} again`);
      log(`SNS: ${firing.subject} ${seconds(firing, stoppedAt)} s after etcd stopped on ${victim}; ${resolved.subject} ${seconds(resolved, startedAt)} s after it started again`);
      alertNotification = {
        victim,
        alert: ALERT_NAMES.etcdMemberDown,
        firingAfterSeconds: Number(seconds(firing, stoppedAt)),
        resolvedAfterSeconds: Number(seconds(resolved, startedAt)),
      };
      await waitHealthy(current, 120_000);
    },
  );

  test("report: the drills' HTML report renders its timelines in a real headless Chromium", { timeout: 3 * 60_000 }, async () => {
    requireLab();
    assert.ok(summaries.length > 0, "drills ran");
    // Through the file, as `npm run lab -- report` reads it.
    const json = REPORT.replace(/\.json$/, ".partial.json");
    fs.mkdirSync(path.dirname(json), { recursive: true });
    fs.writeFileSync(json, JSON.stringify(currentReport()));
    const html = renderDrillReport([{ title: WAN ? "drills over the WAN emulator" : "drills", report: readLabReport(json) }]);
    fs.rmSync(json);
    const out = REPORT.replace(/\.json$/, ".html");
    fs.writeFileSync(out, html);
    const shot = PNG.sync.read(await screenshotHtml(await cachedRootfs(), html, REPORT_SCREENSHOT));
    const count = (hex: string): number => {
      const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      let n = 0;
      for (let i = 0; i < shot.data.length; i += 4) if (shot.data[i] === r && shot.data[i + 1] === g && shot.data[i + 2] === b) n++;
      return n;
    };
    // The first drill's chart is on the first screen: its acknowledged-write bars and its fault mark are drawn.
    assert.ok(count(TIMELINE_COLOURS.acks) > 5000, `acknowledged writes drawn: ${count(TIMELINE_COLOURS.acks)} px of ${TIMELINE_COLOURS.acks}`);
    assert.ok(count(TIMELINE_COLOURS.fault) > 100, `fault mark drawn: ${count(TIMELINE_COLOURS.fault)} px of ${TIMELINE_COLOURS.fault}`);
    log(`report: ${out}`);
  });
});
