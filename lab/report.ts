import * as fs from "node:fs";
import * as path from "node:path";
import type { Check, Verification } from "../checks/readiness";
import type { DrillOutcome, DrillSummary, TopologySnapshot, WriteTimeline } from "./drills";

/**
 * The drill report (`npm run lab -- report`): one self-contained HTML file
 * from the lab's JSON reports. Per drill: a timeline of acknowledged writes
 * per 100 ms with the fault, promotion and recovery marked, the RTO/RPO
 * figures of every repetition, and the topology before and after.
 *
 * Self-contained means it opens from a mail attachment or a CI artifact with
 * no network: inline CSS, charts as inline SVG drawn here, no script, no
 * font or image from anywhere. Every string from a report is escaped (node
 * names and problems come from the cluster, not from us).
 */

/**
 * The JSON reports as far as the HTML reads them: the drills' (tests/lab/drills.test.ts,
 * `npm run lab -- drill`: .lab/report.json, .lab/report-wan.json) and the boot path's
 * (tests/lab/boot.test.ts: .lab/report-boot.json). Everything is optional because
 * reports written before a field existed must still render.
 */
export interface LabReport {
  ok?: boolean;
  at?: string;
  network?: "lan" | "wan";
  machine?: { cpus?: number; memoryGiB?: number; kernel?: string };
  /** Seconds per phase (the drills test), or `up`'s record with its `timings` (lab/cli.ts). */
  boot?: Record<string, unknown>;
  repeat?: number;
  drillSeconds?: number;
  wan?: { links?: WanLinkLike[]; spec?: { links?: WanLinkLike[] } };
  verification?: Verification;
  drills?: DrillSummary[];
  egressCut?: { cutSeconds?: number; upToHealthySeconds?: number };
  rollingReboot?: DrillOutcome;
  failedBoot?: { victim?: string; upSeconds?: number; clusterError?: string };
  replacement?: { node?: string; cloudInitSeconds?: number; toHealthySeconds?: number };
}

interface WanLinkLike {
  from: string;
  to: string;
  rttMs: number;
}

/** The screenshot `report --screenshot` takes: the first screen (the header and the first drill's chart, table and topology). */
export const REPORT_SCREENSHOT = { width: 1200, height: 716 } as const;

/** The default inputs, in the order they are shown. */
export const REPORT_INPUTS: readonly { file: string; title: string }[] = [
  { file: "report.json", title: "Drills (LAN)" },
  { file: "report-wan.json", title: "Drills over the emulated WAN" },
  { file: "report-boot.json", title: "Boot path" },
];

/** The .lab/report*.json files that exist, titled. */
export function defaultReportInputs(dir: string): { file: string; title: string }[] {
  return REPORT_INPUTS.map((input) => ({ file: path.join(dir, input.file), title: input.title })).filter((input) => fs.existsSync(input.file));
}

export function reportTitle(file: string): string {
  return REPORT_INPUTS.find((input) => input.file === path.basename(file))?.title ?? path.basename(file);
}

/** Reads one JSON report; only the shape the renderer relies on is checked (it tolerates missing fields). */
export function readLabReport(file: string): LabReport {
  const parsed: unknown = JSON.parse(fs.readFileSync(file, "utf8"));
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`${file}: not a lab report (expected a JSON object)`);
  const drills = (parsed as { drills?: unknown }).drills;
  if (drills !== undefined && !(Array.isArray(drills) && drills.every((d: unknown) => Array.isArray((d as { repetitions?: unknown } | null)?.repetitions))))
    throw new Error(`${file}: "drills" is not a list of drills with their repetitions`);
  // Every field of LabReport is optional: any object is one, and the renderer checks what it reads.
  return parsed;
}

// ---- the chart ----------------------------------------------------------------------------

/** Colours the test looks for in the screenshot; the plot background is a tint used nowhere else on the page. */
export const TIMELINE_COLOURS = {
  plot: "#f1f5fd",
  acks: "#2563eb",
  errors: "#f59e0b",
  fault: "#dc2626",
  promotion: "#7c3aed",
  recovered: "#16a34a",
} as const;

/**
 * Fixed size, so a screenshot can be measured: the plot area sits at `plot`
 * inside the SVG, and its tinted background reaches `frame` pixels beyond it
 * left, right and above, where nothing else is drawn but the marks' lines (so
 * the tint outlines the plot even where bars fill it edge to edge).
 */
export const TIMELINE_GEOMETRY = {
  width: 1000,
  height: 232,
  plot: { x: 56, y: 50, width: 924, height: 146 },
  frame: 4,
} as const;

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);
}

/** Tick step for about eight ticks over `span`, from a 1-2-5 ladder. */
function tickStep(span: number, wanted = 8): number {
  const raw = span / wanted;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

/** A filled step outline of per-bucket values (one path, however many buckets). */
function stepArea(values: number[], x: (i: number) => number, y: (v: number) => number): string {
  const base = y(0);
  let d = `M${x(0)} ${base}`;
  let last = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] ?? 0;
    if (v !== last) d += `V${y(v)}`;
    d += `H${x(i + 1)}`;
    last = v;
  }
  return `${d}V${base}Z`;
}

/**
 * The timeline as inline SVG: acknowledged writes per bucket (blue) with the
 * failed ones stacked on top (amber), and a labelled vertical line at each
 * mark. Coordinates are whole pixels and the shapes crisp, so the colours in
 * a screenshot are exactly these (the test counts them).
 */
export function timelineSvg(timeline: WriteTimeline, caption: string): string {
  const { width, height, plot, frame } = TIMELINE_GEOMETRY;
  const c = TIMELINE_COLOURS;
  const buckets = Math.max(1, timeline.acks.length, timeline.errors.length);
  const bucketSeconds = timeline.bucketMs / 1000;
  const duration = buckets * bucketSeconds;
  const totals = Array.from({ length: buckets }, (_, i) => (timeline.acks[i] ?? 0) + (timeline.errors[i] ?? 0));
  const yMax = Math.max(1, ...totals);
  const xOfSeconds = (s: number): number => Math.round(plot.x + (Math.min(Math.max(s, 0), duration) / duration) * plot.width);
  const xOfBucket = (i: number): number => xOfSeconds(i * bucketSeconds);
  const yOf = (v: number): number => Math.round(plot.y + plot.height - (v / yMax) * plot.height);
  const bottom = plot.y + plot.height;
  const parts: string[] = [];
  parts.push(`<rect x="${plot.x - frame}" y="${plot.y - frame}" width="${plot.width + 2 * frame}" height="${plot.height + frame}" fill="${c.plot}"/>`);
  // Horizontal grid and y labels: whole writes per bucket.
  const yStep = Math.max(1, Math.ceil(tickStep(yMax, 4)));
  for (let v = 0; v <= yMax; v += yStep) {
    const y = yOf(v);
    if (v > 0) parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.width}" y1="${y + 0.5}" y2="${y + 0.5}" stroke="#d5dde9"/>`);
    parts.push(`<text x="${plot.x - frame - 4}" y="${y + 4}" text-anchor="end">${v}</text>`);
  }
  parts.push(`<path d="${stepArea(totals, xOfBucket, yOf)}" fill="${c.errors}"/>`);
  parts.push(`<path d="${stepArea(timeline.acks, xOfBucket, yOf)}" fill="${c.acks}"/>`);
  // The x axis in seconds from the timeline's start (its first write or the fault, whichever came first).
  parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.width}" y1="${bottom + 0.5}" y2="${bottom + 0.5}" stroke="#475569"/>`);
  const xStep = tickStep(duration, 12);
  for (let s = 0; s <= duration + 1e-9; s += xStep) {
    const x = xOfSeconds(s);
    parts.push(`<line x1="${x + 0.5}" x2="${x + 0.5}" y1="${bottom}" y2="${bottom + 5}" stroke="#475569"/>`);
    parts.push(`<text x="${x}" y="${bottom + 18}" text-anchor="middle">${Number(s.toFixed(3))}</text>`);
  }
  parts.push(`<text x="${plot.x + plot.width}" y="${height - 4}" text-anchor="end">seconds from the first write</text>`);
  parts.push(`<text transform="translate(14 ${plot.y + plot.height / 2}) rotate(-90)" text-anchor="middle">writes / ${timeline.bucketMs} ms</text>`);
  // Marks last, over the bars; each label on its own row, since promotion and recovery often coincide.
  timeline.marks.forEach((mark, row) => {
    const colour = c[mark.label] ?? "#334155";
    const x = xOfSeconds(mark.atSeconds);
    const labelY = 13 + row * 13;
    const anchor = x > width - 170 ? "end" : "start";
    const labelX = anchor === "end" ? x - 5 : x + 5;
    parts.push(`<line x1="${x}" x2="${x}" y1="${labelY - 9}" y2="${bottom}" stroke="${colour}" stroke-width="2"/>`);
    parts.push(`<text x="${labelX}" y="${labelY}" text-anchor="${anchor}" fill="${colour}" font-weight="bold">${escapeHtml(mark.label)} ${mark.atSeconds.toFixed(1)} s</text>`);
  });
  return [
    `<svg class="timeline" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" shape-rendering="crispEdges" role="img" aria-label="${escapeHtml(caption)}">`,
    ...parts,
    "</svg>",
  ].join("\n");
}

// ---- the page -----------------------------------------------------------------------------

const seconds = (v: number | undefined, digits = 2): string => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "—");
const count = (v: number | undefined): string => (typeof v === "number" ? String(v) : "—");

function topologyCells(t: TopologySnapshot | undefined): string {
  if (!t) return `<td colspan="3" class="muted">not recorded</td>`;
  return `<td>${escapeHtml(t.leader ?? "none")}</td><td>${escapeHtml(t.syncStandby ?? "none")}</td><td>${escapeHtml(t.replicas.length ? t.replicas.join(", ") : "none")}</td>`;
}

function status(ok: boolean | undefined): string {
  if (ok === undefined) return "";
  return ok ? `<span class="ok">ok</span>` : `<span class="fail">problems</span>`;
}

function drillSection(drill: DrillSummary): string {
  const reps = drill.repetitions;
  const out: string[] = [`<section class="drill">`, `<h3>${escapeHtml(drill.id)} ${status(drill.ok)}</h3>`, `<p class="title">${escapeHtml(drill.title)}</p>`];
  for (const rep of reps) {
    const label = reps.length > 1 ? `repetition ${rep.repetition}: ` : "";
    if (rep.timeline) {
      out.push(`<figure>${timelineSvg(rep.timeline, `${drill.id} ${label}writes per ${rep.timeline.bucketMs} ms`)}</figure>`);
      if (reps.length > 1) out.push(`<p class="caption">${escapeHtml(label)}${rep.acked} acknowledged writes</p>`);
    } else out.push(`<p class="muted">${escapeHtml(label)}no timeline recorded</p>`);
  }
  if (reps.some((r) => r.timeline)) {
    const c = TIMELINE_COLOURS;
    out.push(
      `<p class="legend"><i style="background:${c.acks}"></i>acknowledged <i style="background:${c.errors}"></i>failed (outcome unknown) <i style="background:${c.fault}"></i>fault <i style="background:${c.promotion}"></i>first write on the new primary <i style="background:${c.recovered}"></i>writes resumed</p>`,
    );
  }
  out.push(
    `<table><thead><tr><th>rep.</th><th>RTO s</th><th>RPO missing</th><th>split-brain acks</th><th>unknown outcomes</th><th>acked</th><th>restore s</th><th>primary</th><th>result</th></tr></thead><tbody>`,
  );
  for (const rep of reps) {
    const primary = rep.oldPrimary === rep.newPrimary ? (rep.oldPrimary ?? "—") : `${rep.oldPrimary ?? "?"} → ${rep.newPrimary ?? "?"}`;
    const result = rep.ok ? `<span class="ok">ok</span>` : `<span class="fail">${rep.problems.map(escapeHtml).join("<br>") || "failed"}</span>`;
    out.push(
      `<tr><td>${rep.repetition}</td><td class="num">${seconds(rep.rtoSeconds)}</td><td class="num">${count(rep.rpoMissing)}</td><td class="num">${count(rep.splitBrainAcks)}</td><td class="num">${count(rep.unknownOutcome)}</td><td class="num">${count(rep.acked)}</td><td class="num">${seconds(rep.restoreSeconds, 1)}</td><td>${escapeHtml(primary)}</td><td>${result}</td></tr>`,
    );
  }
  out.push(`</tbody></table>`);
  if (reps.some((r) => r.topology)) {
    out.push(
      `<table class="topology"><thead><tr><th rowspan="2">rep.</th><th colspan="3">before the fault</th><th colspan="3">after</th></tr><tr><th>leader</th><th>sync standby</th><th>replicas</th><th>leader</th><th>sync standby</th><th>replicas</th></tr></thead><tbody>`,
    );
    for (const rep of reps) out.push(`<tr><td>${rep.repetition}</td>${topologyCells(rep.topology?.before)}${topologyCells(rep.topology?.after)}</tr>`);
    out.push(`</tbody></table>`);
  } else out.push(`<p class="muted">topology before and after not recorded</p>`);
  out.push(`</section>`);
  return out.join("\n");
}

/** "pkiSeconds" → "pki", "upToHealthySeconds" → "up to healthy". */
function phaseName(key: string): string {
  return key
    .replace(/Seconds$/, "")
    .replace(/([A-Z])/g, " $1")
    .toLowerCase();
}

function bootLine(boot: Record<string, unknown>): string | undefined {
  const timings = typeof boot.timings === "object" && boot.timings !== null ? (boot.timings as Record<string, unknown>) : {};
  const entries = [...Object.entries(timings), ...Object.entries(boot)].filter((e): e is [string, number] => typeof e[1] === "number" && e[0].endsWith("Seconds"));
  if (!entries.length) return undefined;
  return entries.map(([key, value]) => `${escapeHtml(phaseName(key))} ${value.toFixed(1)} s`).join(" · ");
}

function verificationBlock(v: Verification): string {
  // `?? {}`: a verification cut short (the cluster never answered) may lack its topology.
  const t: Partial<Verification["topology"]> = v.topology ?? {};
  const checks: Check[] = Array.isArray(v.checks) ? v.checks : [];
  const failed = checks.filter((c) => !c.ok);
  const lines = [
    `<p><b>Cluster after <code>up</code></b> ${status(v.ok)}: leader ${escapeHtml(t.leader ?? "none")} · sync standby ${escapeHtml(t.syncStandby ?? "none")} · replicas ${escapeHtml((t.replicas ?? []).join(", ") || "none")}; ${checks.length - failed.length} of ${checks.length} checks passed</p>`,
  ];
  if (failed.length) lines.push(`<ul class="fail">${failed.map((c) => `<li>${escapeHtml(c.id)}: ${escapeHtml(c.detail)}</li>`).join("")}</ul>`);
  return lines.join("\n");
}

function bootPathBlock(report: LabReport): string | undefined {
  const rows: string[] = [];
  const cut = report.egressCut;
  if (cut)
    rows.push(`<tr><td>first boot with no egress for ${seconds(cut.cutSeconds, 0)} s</td><td>healthy ${seconds(cut.upToHealthySeconds, 1)} s after <code>up</code></td></tr>`);
  const failed = report.failedBoot;
  if (failed)
    rows.push(
      `<tr><td>a failed boot step on ${escapeHtml(failed.victim ?? "?")}</td><td><code>up</code> ${seconds(failed.upSeconds, 1)} s${failed.clusterError ? `; ${escapeHtml(failed.clusterError)}` : ""}</td></tr>`,
    );
  const replacement = report.replacement;
  if (replacement)
    rows.push(
      `<tr><td>replacement of ${escapeHtml(replacement.node ?? "?")}</td><td>cloud-init ${seconds(replacement.cloudInitSeconds, 1)} s, healthy ${seconds(replacement.toHealthySeconds, 1)} s after its launch</td></tr>`,
    );
  return rows.length ? `<table class="boot"><tbody>${rows.join("")}</tbody></table>` : undefined;
}

function reportSection(title: string, report: LabReport): string {
  const out: string[] = [`<section class="report">`, `<h2>${escapeHtml(title)} ${status(report.ok)}</h2>`];
  const m = report.machine;
  const meta = [
    report.at ? `at ${escapeHtml(report.at)}` : "",
    m ? `${count(m.cpus)} cores, ${count(m.memoryGiB)} GiB, kernel ${escapeHtml(m.kernel ?? "?")}` : "",
    report.network ? `network ${escapeHtml(report.network)}` : "",
    report.repeat ? `${report.repeat} repetition(s) per drill` : "",
    report.drillSeconds ? `drills took ${seconds(report.drillSeconds, 0)} s` : "",
  ].filter(Boolean);
  if (meta.length) out.push(`<p class="meta">${meta.join(" · ")}</p>`);
  const links = report.wan?.spec?.links ?? report.wan?.links;
  // The spec lists each direction; a round trip is one figure per pair.
  const pairs = links?.filter((l, i) => !links.slice(0, i).some((o) => o.from === l.to && o.to === l.from));
  if (pairs?.length) out.push(`<p class="meta">WAN round trips: ${pairs.map((l) => `${escapeHtml(l.from)}–${escapeHtml(l.to)} ${l.rttMs} ms`).join(", ")}</p>`);
  const boot = report.boot && bootLine(report.boot);
  if (boot) out.push(`<p class="meta">boot: ${boot}</p>`);
  const upVerification = report.boot?.verification as Verification | undefined;
  const verification = report.verification ?? (upVerification && typeof upVerification === "object" && "topology" in upVerification ? upVerification : undefined);
  if (verification) out.push(verificationBlock(verification));
  const bootPath = bootPathBlock(report);
  if (bootPath) out.push(bootPath);
  const drills = [...(report.drills ?? [])];
  if (report.rollingReboot)
    drills.push({
      id: report.rollingReboot.drill,
      title: "every node rebooted, one at a time, with writes through HAProxy (the boot path's drill)",
      repetitions: [report.rollingReboot],
      rto: {},
      ok: report.rollingReboot.ok,
    });
  for (const drill of drills) out.push(drillSection(drill));
  if (!drills.length) out.push(`<p class="muted">no drills in this report</p>`);
  out.push(`</section>`);
  return out.join("\n");
}

/** Page styles; no colour here equals TIMELINE_COLOURS.plot (the test finds the charts by it). */
const STYLE = `
body { margin: 0; padding: 20px 28px 40px; background: #ffffff; color: #1e293b; font: 14px/1.4 "DejaVu Sans", sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 4px; padding-top: 10px; border-top: 2px solid #cbd5e1; }
h3 { font-size: 16px; margin: 22px 0 0; }
p { margin: 4px 0; }
.meta, .title, .caption { color: #475569; }
.muted { color: #64748b; font-style: italic; }
.ok { color: #15803d; font-weight: bold; }
.fail { color: #b91c1c; font-weight: bold; }
figure { margin: 6px 0 0; width: 1000px; }
svg.timeline { display: block; font: 11px "DejaVu Sans", sans-serif; fill: #334155; }
.legend { font-size: 12px; color: #475569; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; vertical-align: baseline; }
.legend i:first-child { margin-left: 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #cbd5e1; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #e2e8f0; font-weight: bold; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
`;

/** The whole HTML document for the given reports, each under its title. */
export function renderDrillReport(reports: { title: string; report: LabReport }[]): string {
  const drills = reports.reduce((n, r) => n + (r.report.drills?.length ?? 0) + (r.report.rollingReboot ? 1 : 0), 0);
  return [
    "<!doctype html>",
    `<html lang="en"><head><meta charset="utf-8"><title>Drill report</title><style>${STYLE}</style></head><body>`,
    `<h1>Drill report</h1>`,
    `<p class="meta">${reports.length} report(s), ${drills} drill(s). RTO: the longest gap between acknowledged writes from the last one before the fault; RPO: acknowledged writes missing on the primary afterwards.</p>`,
    ...reports.map((r) => reportSection(r.title, r.report)),
    "</body></html>",
    "",
  ].join("\n");
}
