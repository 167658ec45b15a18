import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { PNG } from "pngjs";
import { screenshotHtml } from "../../lab/chromium";
import { writeTimeline, type DrillOutcome, type DrillSummary, type TopologySnapshot } from "../../lab/drills";
import { readLabReport, renderDrillReport, TIMELINE_COLOURS, TIMELINE_GEOMETRY, type LabReport } from "../../lab/report";
import { analyseWrites, type WriteRecord } from "../../lab/writer";
import { rootfsPath, scratchDir } from "./harness";

/**
 * The drill report (lab/report.ts): the HTML is self-contained and escaped,
 * old reports still render, and a real headless Chromium (the Debian 13
 * rootfs's, with no network) draws the timeline chart — measured in its
 * screenshot, with a control region that must stay blank.
 *
 * PGHA_REPORT_FIXTURE=<file> also writes the fixture report as JSON (docs/report.png
 * is `npm run lab -- report --input <file> --screenshot docs/report.png` of it).
 */

const OLD = "10.1.0.10";
const NEW = "10.2.0.10";

/**
 * What lab/assets/writer.py prints around a failover: an INSERT every 50 ms
 * (a few ms each), the one in flight at the fault cut by the 5 s watchdog
 * (outcome unknown), connection attempts failing while HAProxy has no
 * primary, then the new primary acknowledging.
 */
function failoverRecords(t0: number, lastOldAckAt: number, newFirstAckAt: number, endAt: number): WriteRecord[] {
  const records: WriteRecord[] = [{ event: "connected", t: t0, server: OLD }];
  let seq = 0;
  const acks = (from: number, to: number, server: string): void => {
    for (let t = from; t < to; t += 0.05 + 0.004 + (seq % 3) * 0.002) records.push({ seq: ++seq, ok: true, t: t0 + t, wall: 1_780_000_000 + t, server });
  };
  acks(0.01, lastOldAckAt, OLD);
  if (newFirstAckAt - lastOldAckAt > 6) {
    records.push({ seq: ++seq, ok: false, t: t0 + lastOldAckAt + 5.02, err: "server closed the connection unexpectedly" });
    for (let t = lastOldAckAt + 7; t < newFirstAckAt - 2; t += 2.05) records.push({ event: "connect-failed", t: t0 + t, err: "connection to server failed: timeout expired" });
    records.push({ seq: ++seq, ok: false, t: t0 + newFirstAckAt - 1.4, err: "could not receive data from server: Connection reset by peer" });
  } else records.push({ seq: ++seq, ok: false, t: t0 + lastOldAckAt + 0.3, err: "terminating connection due to administrator command" });
  records.push({ event: "connected", t: t0 + newFirstAckAt - 0.03, server: NEW });
  acks(newFirstAckAt, endAt, NEW);
  return records.sort((a, b) => a.t - b.t);
}

const BEFORE: TopologySnapshot = { leader: "pg-seoul-1", syncStandby: "pg-tokyo-1", replicas: ["pg-singapore-1"] };

/** A drill outcome as lab/drills.ts judgeWrites fills it, from the records through the real writeTimeline. */
function outcome(drill: string, records: WriteRecord[], instant: number, after: TopologySnapshot): DrillOutcome {
  const analysis = analyseWrites(records, instant);
  return {
    drill,
    repetition: 1,
    ok: true,
    problems: [],
    rtoSeconds: analysis.rtoSeconds,
    rpoMissing: 0,
    splitBrainAcks: 0,
    acked: analysis.acked,
    unknownOutcome: analysis.unknown,
    unsafeAcks: analysis.unsafe,
    maxGapAfterSeconds: analysis.maxGapAfterSeconds,
    oldPrimary: "pg-seoul-1",
    newPrimary: "pg-tokyo-1",
    restoreSeconds: 8.49,
    timeline: writeTimeline(records, instant, analysis, NEW),
    topology: { before: BEFORE, after },
    details: { firstGapSeconds: analysis.firstGapSeconds },
  };
}

function summary(id: string, title: string, outcomes: DrillOutcome[]): DrillSummary {
  const rtos = outcomes.map((o) => o.rtoSeconds ?? 0);
  return { id, title, repetitions: outcomes, rto: { medianSeconds: rtos[0], maxSeconds: Math.max(...rtos) }, ok: outcomes.every((o) => o.ok) };
}

const T0 = 41_230.5;
const HOST_LOSS_FAULT = 8;
const hostLoss = outcome("primary-host-loss", failoverRecords(T0, HOST_LOSS_FAULT, 26.3, 32), T0 + HOST_LOSS_FAULT, {
  leader: "pg-tokyo-1",
  syncStandby: "pg-seoul-1",
  replicas: ["pg-singapore-1"],
});
const switchover = outcome("planned-switchover", failoverRecords(T0 + 100, 7.6, 9.9, 15), T0 + 106, {
  leader: "pg-tokyo-1",
  syncStandby: "pg-seoul-1",
  replicas: ["pg-singapore-1"],
});

/**
 * A report as the drills wrote it before they recorded timelines and topologies
 * (cut down from a real .lab/report.json: its first three checks, one drill).
 */
const OLD_REPORT_JSON = `{
  "ok": true,
  "network": "lan",
  "at": "2026-12-02T03:44:44.257Z",
  "machine": {"cpus": 2, "memoryGiB": 24, "kernel": "6.18.44-fc-v857"},
  "boot": {"pkiSeconds": 1.714, "networkSeconds": 9.689, "bootSeconds": 75.169, "upSeconds": 101.985, "upToHealthySeconds": 124.936},
  "repeat": 1,
  "verification": {
    "ok": true,
    "topology": {"leader": "pg-seoul-1", "syncStandby": "pg-tokyo-1", "syncStandbys": ["pg-tokyo-1"], "replicas": ["pg-singapore-1"], "members": [{"name": "pg-seoul-1", "role": "leader", "state": "running", "host": "10.1.0.10", "timeline": 1, "pendingRestart": false}, {"name": "pg-singapore-1", "role": "replica", "state": "streaming", "host": "10.3.0.10", "timeline": 1, "lag": 0, "pendingRestart": false}, {"name": "pg-tokyo-1", "role": "sync_standby", "state": "streaming", "host": "10.2.0.10", "timeline": 1, "lag": 0, "pendingRestart": false}], "problems": []},
    "checks": [{"id": "topology (patronictl list)", "ok": true, "detail": "Leader pg-seoul-1, Sync Standby pg-tokyo-1, Replica pg-singapore-1"}, {"id": "replication", "ok": true, "detail": "pg-singapore-1=async pg-tokyo-1=sync"}, {"id": "etcd-health", "ok": true, "detail": "3 members healthy over mTLS; raft leader pg-singapore-1"}]
  },
  "drills": [
    {"id": "etcd-member-loss", "title": "loss of one etcd member (the raft leader, stopped); quorum holds, writes continue", "repetitions": [{"drill": "etcd-member-loss", "repetition": 1, "ok": true, "problems": [], "rpoMissing": 0, "splitBrainAcks": 0, "acked": 503, "unknownOutcome": 0, "unsafeAcks": 0, "maxGapAfterSeconds": 0.1624510330002522, "details": {"stoppedMember": "pg-singapore-1", "quorum": ["pg-seoul-1:healthy (leader)", "pg-tokyo-1:healthy"], "firstGapSeconds": 0.0438526069992804, "servers": ["pg-singapore-1"]}, "oldPrimary": "pg-singapore-1", "newPrimary": "pg-singapore-1", "rtoSeconds": 0.1624510330002522, "restoreSeconds": 0.85}], "rto": {"medianSeconds": 0.1624510330002522, "maxSeconds": 0.1624510330002522}, "ok": true}
  ]
}`;
const oldOutcome: DrillOutcome = (JSON.parse(OLD_REPORT_JSON) as { drills: DrillSummary[] }).drills[0].repetitions[0];

const verification = {
  ok: true,
  topology: {
    leader: "pg-seoul-1",
    syncStandby: "pg-tokyo-1",
    syncStandbys: ["pg-tokyo-1"],
    replicas: ["pg-singapore-1"],
    members: [],
    problems: [],
  },
  checks: [
    { id: "topology (patronictl list)", ok: true, detail: "Leader pg-seoul-1, Sync Standby pg-tokyo-1, Replica pg-singapore-1" },
    { id: "etcd-health", ok: true, detail: "3 members healthy over mTLS; raft leader pg-singapore-1" },
  ],
};

const fixture: LabReport = {
  ok: true,
  network: "lan",
  at: "2026-12-02T03:44:44.257Z",
  machine: { cpus: 2, memoryGiB: 24, kernel: "6.18.44" },
  boot: { pkiSeconds: 1.714, networkSeconds: 9.689, bootSeconds: 75.169, upSeconds: 101.985, upToHealthySeconds: 124.936 },
  repeat: 1,
  verification,
  drills: [
    summary("primary-host-loss", "hard loss of the primary's host (links cut, processes keep running)", [hostLoss]),
    summary("planned-switchover", "planned switchover (patronictl switchover --leader X --candidate Y --force)", [switchover]),
    summary("etcd-member-loss", "loss of one etcd member (the raft leader, stopped); quorum holds, writes continue", [oldOutcome]),
  ],
};

if (process.env.PGHA_REPORT_FIXTURE) fs.writeFileSync(process.env.PGHA_REPORT_FIXTURE, `${JSON.stringify(fixture, null, 2)}\n`);

const base = scratchDir("report");
let keep = false;
after(() => {
  if (!keep) fs.rmSync(base, { recursive: true, force: true });
});

describe("drill report HTML", () => {
  test("the fixture's timelines come from the real writeTimeline: fault, promotion and recovery marked", () => {
    const timeline = hostLoss.timeline!;
    assert.equal(timeline.bucketMs, 100);
    assert.deepEqual(
      timeline.marks.map((m) => m.label),
      ["fault", "promotion", "recovered"],
    );
    const fault = timeline.marks[0].atSeconds;
    const promotion = timeline.marks[1].atSeconds;
    assert.ok(promotion - fault > 18 && promotion - fault < 19, `outage ${promotion - fault} s`);
    assert.ok(timeline.errors.reduce((a, b) => a + b, 0) >= 2, "the cut INSERTs are errors");
  });

  test("is self-contained (no script, no external reference) and escapes every string", () => {
    const hostile: LabReport = {
      ...fixture,
      drills: [
        summary("primary-host-loss", "title with <i>markup</i> & ampersand", [
          {
            ...hostLoss,
            ok: false,
            problems: [`RPO: 1 commit missing on pg-<script>alert(1)</script>`],
            topology: { before: { ...BEFORE, leader: "pg-<b>x</b>-1" }, after: BEFORE },
          },
        ]),
      ],
    };
    const html = renderDrillReport([{ title: "Drills <LAN>", report: hostile }]);
    assert.doesNotMatch(html, /<script/i);
    assert.doesNotMatch(html, /<b>x<\/b>|<i>markup/);
    assert.match(html, /pg-&lt;b&gt;x&lt;\/b&gt;-1/);
    assert.match(html, /pg-&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.match(html, /Drills &lt;LAN&gt;/);
    assert.match(html, /&amp; ampersand/);
    // Nothing loaded from anywhere: no URL in an attribute or in CSS, no protocol-relative reference either.
    assert.doesNotMatch(html, /\b(?:src|href|xlink:href|action|poster)\s*=/i);
    assert.doesNotMatch(html, /url\(|@import|<link|<img|<iframe|<object/i);
    assert.doesNotMatch(html, /https?:\/\//);
    assert.equal((html.match(/<svg class="timeline"/g) ?? []).length, 1);
  });

  test("renders reports of the old shape (no timeline, no topology) and the boot path's", () => {
    const file = path.join(base, "report.json");
    fs.writeFileSync(file, OLD_REPORT_JSON);
    const oldReport = readLabReport(file);
    const bootReport: LabReport = {
      at: "2026-12-02T03:44:52.436Z",
      machine: { cpus: 2, memoryGiB: 24, kernel: "6.18.44-fc-v857" },
      egressCut: { cutSeconds: 120, upToHealthySeconds: 245.691 },
      rollingReboot: { ...oldOutcome, drill: "rolling-reboot", acked: 1140, unknownOutcome: 3, rtoSeconds: 2.6846499210005277, newPrimary: "pg-seoul-1" },
      failedBoot: { victim: "pg-singapore-1", upSeconds: 129.167, clusterError: "no connected member answered /cluster (pg-singapore-1: HTTP 0)" },
      replacement: { node: "pg-singapore-1", cloudInitSeconds: 28.351, toHealthySeconds: 51.815 },
    };
    // `up`'s record as `npm run lab -- drill` nests it (lab/cli.ts buildReport): timings and its own verification.
    const cliReport: LabReport = { ok: false, drills: [], boot: { timings: { bootSeconds: 70.1 }, upToHealthySeconds: 120.5, verification } };
    const html = renderDrillReport([
      { title: "Drills (LAN)", report: oldReport },
      { title: "Boot path", report: bootReport },
      { title: "CLI", report: cliReport },
    ]);
    assert.equal((html.match(/no timeline recorded/g) ?? []).length, 2);
    assert.match(html, /<td class="num">0\.16<\/td>/);
    assert.match(html, /rolling-reboot/);
    assert.match(html, /<td class="num">2\.68<\/td>/);
    assert.match(html, /healthy 245\.7 s after/);
    assert.match(html, /up to healthy 124\.9 s/);
    assert.match(html, /boot 70\.1 s · up to healthy 120\.5 s/);
    assert.match(html, /3 of 3 checks passed/);
    assert.match(html, /2 of 2 checks passed/);
    assert.match(html, /no drills in this report/);
    assert.doesNotMatch(html, /<svg/);
  });
});

// ---- the screenshot -----------------------------------------------------------------------

type Rgb = readonly [number, number, number];

function rgb(hex: string): Rgb {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

class Shot {
  constructor(readonly png: PNG) {}

  is(x: number, y: number, colour: Rgb, tolerance = 0): boolean {
    const i = (y * this.png.width + x) * 4;
    const d = this.png.data;
    return Math.abs(d[i] - colour[0]) <= tolerance && Math.abs(d[i + 1] - colour[1]) <= tolerance && Math.abs(d[i + 2] - colour[2]) <= tolerance;
  }

  /** Pixels of `colour` in [x0, x1) × [y0, y1). */
  count(colour: Rgb, x0: number, x1: number, y0: number, y1: number, tolerance = 0): number {
    let n = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (this.is(x, y, colour, tolerance)) n++;
    return n;
  }
}

interface Box {
  left: number;
  right: number;
  top: number;
  bottom: number;
}

/**
 * The first chart's plot area, found by its tint (a colour the page uses
 * nowhere else): the first row with a long run of it is the frame above the
 * plot, whose first and last tinted pixels are the frame's sides; the left
 * side runs down to the x axis. The frame is then taken off.
 */
function firstPlot(shot: Shot): Box | undefined {
  const tint = rgb(TIMELINE_COLOURS.plot);
  const { frame } = TIMELINE_GEOMETRY;
  for (let y = 0; y < shot.png.height; y++) {
    const xs: number[] = [];
    for (let x = 0; x < shot.png.width; x++) if (shot.is(x, y, tint)) xs.push(x);
    if (xs.length < 100) continue;
    const left = xs[0];
    let bottom = y;
    while (bottom < shot.png.height && shot.is(left, bottom, tint)) bottom++;
    return { left: left + frame, right: xs[xs.length - 1] + 1 - frame, top: y + frame, bottom };
  }
  return undefined;
}

describe("drill report in a real headless Chromium", () => {
  test("the first chart is drawn: acknowledged writes, the fault and recovery lines, no ack in the outage, a blank margin", { timeout: 180_000 }, async () => {
    const rootfs = rootfsPath();
    const html = renderDrillReport([{ title: "Drills (LAN)", report: fixture }]);
    fs.writeFileSync(path.join(base, "report.html"), html);
    const size = { width: 1200, height: 900 };
    const buffer = await screenshotHtml(rootfs, html, size);
    const file = path.join(base, "report.png");
    fs.writeFileSync(file, buffer);
    keep = true; // until every assertion passed: the screenshot is the evidence
    const shot = new Shot(PNG.sync.read(buffer));
    assert.equal(shot.png.width, size.width, file);
    assert.equal(shot.png.height, size.height, file);

    const box = firstPlot(shot);
    assert.ok(box, `no chart plot area (${TIMELINE_COLOURS.plot}) in ${file}`);
    const { plot } = TIMELINE_GEOMETRY;
    const width = box.right - box.left;
    const height = box.bottom - box.top;
    assert.ok(
      Math.abs(width - plot.width) <= 2 && Math.abs(height - plot.height) <= 2,
      `plot area ${width}×${height} at ${box.left},${box.top}, expected ${plot.width}×${plot.height}: ${file}`,
    );

    const timeline = hostLoss.timeline!;
    const duration = (Math.max(timeline.acks.length, timeline.errors.length) * timeline.bucketMs) / 1000;
    const xOf = (s: number): number => box.left + (s / duration) * width;
    const [fault, promotion, recovered] = timeline.marks.map((m) => m.atSeconds);

    // (a) The acknowledged writes: a writer at ~18 acks/s fills much of the plot outside the outage.
    const acks = shot.count(rgb(TIMELINE_COLOURS.acks), box.left, box.right, box.top, box.bottom, 8);
    assert.ok(acks > 0.1 * width * height, `only ${acks} ack-coloured pixels in the ${width}×${height} plot: ${file}`);
    assert.ok(shot.count(rgb(TIMELINE_COLOURS.errors), box.left, box.right, box.top, box.bottom, 8) > 0, `no failed write drawn: ${file}`);

    // (b) The marks: a full-height line of the fault's colour where the fault was, and the recovery's.
    for (const [name, at] of [
      ["fault", fault],
      ["recovered", recovered],
    ] as const) {
      const colour = rgb(TIMELINE_COLOURS[name]);
      const columns: number[] = [];
      for (let x = box.left; x < box.right; x++) if (shot.count(colour, x, x + 1, box.top, box.bottom, 8) >= 0.9 * height) columns.push(x);
      assert.ok(columns.length > 0, `no ${name} line in the plot: ${file}`);
      assert.ok(
        columns.every((x) => Math.abs(x - xOf(at)) <= 3),
        `${name} line at x ${columns.join(",")}, expected ${xOf(at).toFixed(0)}: ${file}`,
      );
    }
    // Promotion and recovery coincide in this failover: the promotion's line shows above the plot, under its label.
    assert.ok(shot.count(rgb(TIMELINE_COLOURS.promotion), box.left, box.right, 0, box.top, 8) > 20, `no promotion mark: ${file}`);
    assert.ok(Math.abs(promotion - recovered) < 0.2);

    // (c) Controls that must stay empty: no acknowledged write inside the outage, and the page right of the chart blank.
    const outageAcks = shot.count(rgb(TIMELINE_COLOURS.acks), Math.ceil(xOf(fault + 0.5)), Math.floor(xOf(promotion - 0.5)), box.top, box.bottom, 60);
    assert.equal(outageAcks, 0, `ack-coloured pixels inside the outage: ${file}`);
    const marginLeft = box.right + 40;
    assert.ok(size.width - 10 - marginLeft > 100, "a margin wide enough to be a control");
    const margin = (size.width - 10 - marginLeft) * (box.bottom + 40 - (box.top - 40));
    const white = shot.count([255, 255, 255], marginLeft, size.width - 10, box.top - 40, box.bottom + 40);
    assert.equal(white, margin, `the margin right of the chart is not blank: ${file}`);
    keep = false;
  });
});
