import * as fs from "node:fs";
import * as path from "node:path";
import { clearEnvCache } from "../checks/cluster";
import { BACKUP_DRILLS } from "./backup-drills";
import { REGION_DRILLS } from "./region-drills";
import { DRILLS, prepareDrills, restoreBaseline, summarise, type DrillContext, type DrillDefinition, type DrillOutcome, type DrillSummary } from "./drills";
import { waitFor } from "./exec";
import type { LabContext } from "./lab";
import { LiveTable } from "./table";
import type { Verification } from "../checks/readiness";
import { verifyCluster } from "./verify";

export const DRILL_COLUMNS = [
  { key: "n", title: "#", width: 2, align: "right" as const },
  { key: "drill", title: "drill", width: 18 },
  { key: "rep", title: "rep", width: 3, align: "right" as const },
  { key: "state", title: "state", width: 44 },
  { key: "rto", title: "RTO s", width: 6, align: "right" as const },
  { key: "rpo", title: "RPO", width: 3, align: "right" as const },
  { key: "split", title: "split", width: 5, align: "right" as const },
  { key: "primary", title: "primary", width: 31 },
  { key: "restore", title: "restore s", width: 9, align: "right" as const },
];

export function drillContext(lab: LabContext, progress: (phase: string) => void, logFile: string): DrillContext {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const log = (line: string): void => {
    fs.appendFileSync(logFile, `${new Date().toISOString()} ${line}\n`);
  };
  return {
    access: lab.access,
    transport: lab.transport,
    faults: lab.transport,
    progress: (phase) => {
      log(phase);
      progress(phase);
    },
    log,
    serviceLog: (node, unit) => lab.transport.unitLog(node, unit).catch(() => undefined),
  };
}

/** Waits until `status` passes completely (boot-to-healthy). */
export async function waitHealthy(lab: LabContext, timeoutMs: number, onAttempt?: (v: Verification) => void): Promise<Verification> {
  return waitFor(
    "the cluster to pass every status check",
    timeoutMs,
    async () => {
      clearEnvCache();
      const verification = await verifyCluster(lab.access);
      onAttempt?.(verification);
      return verification.ok ? verification : undefined;
    },
    2000,
  );
}

/**
 * One run of a drill. A drill that throws is a failed outcome, not an
 * aborted series, and the cluster is restored for the next drill if at all
 * possible.
 */
export async function runDrill(drill: DrillDefinition, ctx: DrillContext, rep: number): Promise<DrillOutcome> {
  try {
    return await drill.run(ctx, rep);
  } catch (error) {
    const result: DrillOutcome = {
      drill: drill.id,
      repetition: rep,
      ok: false,
      problems: [error instanceof Error ? error.message : String(error)],
      rpoMissing: 0,
      splitBrainAcks: 0,
      acked: 0,
      unknownOutcome: 0,
      unsafeAcks: 0,
      maxGapAfterSeconds: 0,
      details: {},
    };
    await restoreBaseline(ctx).catch((e: unknown) => result.problems.push(`restore failed: ${e instanceof Error ? e.message : String(e)}`));
    return result;
  }
}

/** The live table's cells for one outcome (DRILL_COLUMNS). */
export function outcomeRow(result: DrillOutcome): Record<string, string> {
  return {
    state: result.ok ? "ok" : `FAIL: ${result.problems.join("; ")}`,
    rto: fmt(result.rtoSeconds),
    rpo: String(result.rpoMissing),
    split: String(result.splitBrainAcks),
    primary: result.oldPrimary ? `${result.oldPrimary}→${result.newPrimary ?? "?"}` : "",
    restore: fmt(result.restoreSeconds, 1),
  };
}

function fmt(value: number | undefined, digits = 2): string {
  return value === undefined ? "-" : value.toFixed(digits);
}

/** Every drill in its numbering: the failover drills (1-9), the backup drills (10-14), the multi-region drills (15-). */
export const ALL_DRILLS: DrillDefinition[] = [...DRILLS, ...BACKUP_DRILLS, ...REGION_DRILLS];

/** What `drill` runs with no names: every drill but the backup drills. */
export const DEFAULT_DRILLS: DrillDefinition[] = [...DRILLS, ...REGION_DRILLS];

export function drillNumber(drill: DrillDefinition): number {
  return ALL_DRILLS.indexOf(drill) + 1;
}

/** Runs the drills N times each, live table on stderr, and returns the summaries. */
export async function runDrills(lab: LabContext, drills: DrillDefinition[], repeat: number, logFile: string, table = new LiveTable(DRILL_COLUMNS)): Promise<DrillSummary[]> {
  let current = -1;
  const ctx = drillContext(
    lab,
    (phase) => {
      table.update(current, { state: phase });
    },
    logFile,
  );
  await restoreBaseline(ctx);
  await prepareDrills(ctx);
  const summaries: DrillSummary[] = [];
  for (const drill of drills) {
    const outcomes: DrillOutcome[] = [];
    for (let rep = 1; rep <= repeat; rep++) {
      current = table.add({ n: String(drillNumber(drill)), drill: drill.id, rep: String(rep), state: "starting" });
      ctx.log(`=== ${drill.id} #${rep}: ${drill.title}`);
      const result = await runDrill(drill, ctx, rep);
      ctx.log(`=== ${drill.id} #${rep} result: ${JSON.stringify(result)}`);
      outcomes.push(result);
      table.update(current, outcomeRow(result));
    }
    summaries.push(summarise(drill, outcomes));
  }
  table.finish();
  return summaries;
}

export function summaryTable(summaries: DrillSummary[]): string {
  const lines = ["drill                 runs  RTO median s  RTO max s  RPO max  split  result", "─".repeat(78)];
  for (const s of summaries) {
    const rpo = Math.max(0, ...s.repetitions.map((r) => r.rpoMissing));
    const split = s.repetitions.reduce((sum, r) => sum + r.splitBrainAcks, 0);
    lines.push(
      `${s.id.padEnd(20)}  ${String(s.repetitions.length).padStart(4)}  ${fmt(s.rto.medianSeconds).padStart(12)}  ${fmt(s.rto.maxSeconds).padStart(9)}  ${String(rpo).padStart(7)}  ${String(split).padStart(5)}  ${s.ok ? "ok" : "FAIL"}`,
    );
  }
  return lines.join("\n");
}
