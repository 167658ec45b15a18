import * as fs from "node:fs";
import * as path from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { clearEnvCache } from "../checks/cluster";
import { DRILLS, median, type DrillSummary } from "./drills";
import { labContext, labDown, labNamespaceNames, labNetworkUp, preflight } from "./lab";
import { LabTransport } from "./transport";
import { existingNamespaces } from "./netns";
import { bulkIsolationLine, measureBulkIsolation, quantile, wanOptionsFromEnv, type BulkIsolation } from "./wan";
import {
  delayLineStatus,
  healPartitions,
  listPartitions,
  partitionRegions,
  proofTable,
  proveWan,
  readWanSpec,
  retuneWan,
  wanHealth,
  DEFAULT_WAN_OPTIONS,
  type WanOptions,
} from "./wan";
import { etcdMarkdown, etcdStability, measurementsMarkdown, measureWan } from "./wan-measure";

/** `lab wan ...`: the WAN emulator's switches, its proof and the measurements (lab/wan.ts, lab/wan-measure.ts). */

const stamp = (): string => new Date().toISOString().slice(11, 19);
const say = (line: string): void => void process.stderr.write(`${stamp()} ${line}\n`);

export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("must be a number >= 0");
  return n;
}

/** The up options `--wan --wan-jitter --wan-loss --wan-seed`, or PGHA_LAB_WAN*, as WanOptions. */
export function wanUpOptions(options: { wan?: boolean; wanJitter?: number; wanLoss?: number; wanSeed?: number }, fromEnv: WanOptions | undefined): WanOptions | undefined {
  if (!options.wan && options.wanJitter === undefined && options.wanLoss === undefined && options.wanSeed === undefined) return fromEnv;
  const base = fromEnv ?? DEFAULT_WAN_OPTIONS;
  if (options.wanLoss !== undefined && options.wanLoss > 100) throw new InvalidArgumentError("--wan-loss is a percentage (0–100)");
  return { ...base, jitterMs: options.wanJitter ?? base.jitterMs, lossPercent: options.wanLoss ?? base.lossPercent, seed: options.wanSeed ?? base.seed };
}

async function requireUp(stateDir: string): Promise<ReturnType<typeof labContext>> {
  await preflight();
  const lab = labContext(stateDir);
  const present = new Set(await existingNamespaces());
  const missing = labNamespaceNames(lab.layout).filter((ns) => !present.has(ns));
  if (!fs.existsSync(lab.layout.stateFile) || missing.length)
    throw new Error(`the lab is not up${missing.length ? ` (missing namespaces: ${missing.join(", ")})` : ""}: run \`npm run lab -- up --wan\``);
  return lab;
}

function requireWan(lab: ReturnType<typeof labContext>): void {
  if (!readWanSpec(lab.layout)) throw new Error("the lab is up without the WAN emulator: bring it up with `npm run lab -- up --wan`");
}

interface ReportLike {
  network?: string;
  drills?: DrillSummary[];
}

/** LAN and WAN drill reports side by side (RTO median/max, RPO, split brain, result). */
export function compareDrills(lan: ReportLike, wan: ReportLike): string {
  const lines = [
    "| drill | runs LAN / WAN | RTO LAN: median (min–max) | RTO WAN: median (min–max) | RPO LAN / WAN | split brain LAN / WAN | result LAN / WAN |",
    "|---|---|---|---|---|---|---|",
  ];
  const ids = [...new Set([...(lan.drills ?? []), ...(wan.drills ?? [])].map((d) => d.id))];
  const rto = (d?: DrillSummary): string => {
    const values = (d?.repetitions ?? []).map((r) => r.rtoSeconds).filter((v): v is number => v !== undefined);
    if (!values.length) return "-";
    return `${(median(values) as number).toFixed(1)} s (${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)})`;
  };
  const rpo = (d?: DrillSummary): string => (d ? String(Math.max(0, ...d.repetitions.map((r) => r.rpoMissing))) : "-");
  const split = (d?: DrillSummary): string => (d ? String(d.repetitions.reduce((s, r) => s + r.splitBrainAcks, 0)) : "-");
  const result = (d?: DrillSummary): string => (d ? (d.ok ? "ok" : "FAIL") : "-");
  for (const id of ids) {
    const a = lan.drills?.find((d) => d.id === id);
    const b = wan.drills?.find((d) => d.id === id);
    lines.push(
      `| ${DRILLS.findIndex((d) => d.id === id) + 1} ${(a ?? b)?.title ?? id} | ${a?.repetitions.length ?? "-"} / ${b?.repetitions.length ?? "-"} | ${rto(a)} | ${rto(b)} | ${rpo(a)} / ${rpo(b)} | ${split(a)} / ${split(b)} | ${result(a)} / ${result(b)} |`,
    );
  }
  return lines.join("\n");
}

export function registerWanCommands(program: Command, stateDir: () => string): void {
  const wan = program.command("wan").description("the WAN emulator: status, proof, partitions, jitter/loss, measurements (lab up --wan)");

  wan
    .command("status")
    .description("delay line counters, rules and partitions")
    .action(async () => {
      const lab = await requireUp(stateDir());
      const health = await wanHealth(lab.layout);
      process.stdout.write(`${health.ok ? "ok  " : "FAIL"}  ${health.detail}\n`);
      const spec = readWanSpec(lab.layout);
      if (spec)
        for (const l of spec.links)
          process.stdout.write(
            `      ${l.from} → ${l.to}: one way ${l.oneWayMs} ms (RTT ${l.rttMs})${l.jitterMs ? ` ±${l.jitterMs}` : ""}${l.lossPercent ? `, loss ${l.lossPercent}%` : ""}\n`,
          );
      const status = spec ? await delayLineStatus(lab.layout) : undefined;
      if (status) process.stdout.write(`${JSON.stringify({ scheduler: status.scheduler, stats: status.stats, pairs: status.pairs }, null, 2)}\n`);
      process.exitCode = health.ok ? 0 : 1;
    });

  wan
    .command("proof")
    .description("ping and TCP RTT between every pair of regions (never below the configured RTT, at most 3 ms + 5 % above) and inside each region (< 3 ms); the partition switch")
    .option("--count <n>", "probes per pair", (v) => Number(v), 20)
    .option("--no-partitions", "skip the partition switch check")
    .option("--json", "print the proof as JSON")
    .action(async (options: { count: number; partitions: boolean; json?: boolean }) => {
      const lab = await requireUp(stateDir());
      requireWan(lab);
      const proof = await proveWan(lab.plan, lab.layout, lab.transport, { count: options.count, partitions: options.partitions, log: say });
      process.stdout.write(options.json ? `${JSON.stringify(proof, null, 2)}\n` : `${proofTable(proof)}\n`);
      process.exitCode = proof.ok ? 0 : 1;
    });

  wan
    .command("partition")
    .description("drop every packet between two regions (both directions) until `wan heal`")
    .argument("<regionA>")
    .argument("<regionB>")
    .action(async (a: string, b: string) => {
      const lab = await requireUp(stateDir());
      await partitionRegions(lab.layout, a, b);
      say(`partitioned ${a} from ${b}; partitions now: ${(await listPartitions(lab.layout)).join(", ")}`);
    });

  wan
    .command("heal")
    .description("remove the partition between two regions, or all partitions")
    .argument("[regionA]")
    .argument("[regionB]")
    .action(async (a?: string, b?: string) => {
      const lab = await requireUp(stateDir());
      if ((a && !b) || (!a && b)) throw new Error("give two regions, or none to heal every partition");
      const healed = await healPartitions(lab.layout, a, b);
      say(healed.length ? `healed ${healed.join(", ")}` : "no partition to heal");
    });

  wan
    .command("set")
    .description("change jitter/loss of the running delay line (queued packets are kept)")
    .option("--jitter <ms>", "uniform jitter ± ms on each one-way delay", nonNegativeNumber)
    .option("--loss <percent>", "loss per packet and direction, percent", nonNegativeNumber)
    .option("--seed <n>", "random seed", nonNegativeNumber)
    .action(async (options: { jitter?: number; loss?: number; seed?: number }) => {
      const lab = await requireUp(stateDir());
      requireWan(lab);
      const current = readWanSpec(lab.layout)?.options ?? DEFAULT_WAN_OPTIONS;
      if (options.loss !== undefined && options.loss > 100) throw new InvalidArgumentError("--loss is a percentage (0–100)");
      const spec = await retuneWan(lab.layout, lab.plan, {
        ...current,
        jitterMs: options.jitter ?? current.jitterMs,
        lossPercent: options.loss ?? current.lossPercent,
        seed: options.seed ?? current.seed,
      });
      say(`WAN now: jitter ±${spec.options.jitterMs} ms, loss ${spec.options.lossPercent}%, seed ${spec.options.seed}`);
    });

  wan
    .command("measure")
    .description("commit latency vs the sync standby's RTT, sync vs async at 1/8/32 clients, inside an etcd stability window")
    .option("--steady-seconds <s>", "etcd stability window (the pgbench runs happen inside it)", (v) => Number(v), 120)
    .option("--pgbench-seconds <s>", "pgbench -T per point", (v) => Number(v), 15)
    .option("--report <file>", "JSON report", path.join(process.cwd(), ".lab", "wan-measure.json"))
    .action(async (options: { steadySeconds: number; pgbenchSeconds: number; report: string }) => {
      const lab = await requireUp(stateDir());
      clearEnvCache();
      const m = await measureWan(lab, { steadySeconds: options.steadySeconds, pgbenchSeconds: options.pgbenchSeconds, progress: say });
      fs.mkdirSync(path.dirname(options.report), { recursive: true });
      fs.writeFileSync(options.report, JSON.stringify({ network: readWanSpec(lab.layout) ? "wan" : "lan", wan: readWanSpec(lab.layout), measurements: m }, null, 2));
      process.stdout.write(`${measurementsMarkdown(m)}\n`);
      say(`report: ${options.report}`);
      process.exitCode = m.commitLatency.ok || !readWanSpec(lab.layout) ? (m.etcd.ok ? 0 : 1) : 1;
    });

  wan
    .command("stability")
    .description("etcd/Patroni under a steady write load only (no leader change allowed), e.g. --seconds 600")
    .option("--seconds <s>", "window", (v) => Number(v), 600)
    .option("--report <file>", "JSON report", path.join(process.cwd(), ".lab", "wan-stability.json"))
    .action(async (options: { seconds: number; report: string }) => {
      const lab = await requireUp(stateDir());
      clearEnvCache();
      const e = await etcdStability(lab, options.seconds, undefined, say);
      fs.mkdirSync(path.dirname(options.report), { recursive: true });
      fs.writeFileSync(options.report, JSON.stringify({ network: readWanSpec(lab.layout) ? "wan" : "lan", wan: readWanSpec(lab.layout), etcd: e }, null, 2));
      process.stdout.write(`${etcdMarkdown(e)}\n`);
      say(`report: ${options.report}`);
      process.exitCode = e.ok ? 0 : 1;
    });

  wan
    .command("bench")
    .description(
      "the delay line under a 64 MiB bulk transfer, N times: ping on another path idle vs during, throughput, the delay line's CPU and lateness (median, min–max); on the lab's network alone unless a WAN lab is up",
    )
    .option("--runs <n>", "repetitions", (v) => Number(v), 5)
    .option("--mbytes <n>", "size of each transfer", (v) => Number(v), 64)
    .option("--rate-mbit <n>", "per-path capacity when this command brings up its own network (0: unlimited)", nonNegativeNumber)
    .option("--report <file>", "JSON report", path.join(process.cwd(), ".lab", "wan-bench.json"))
    .action(async (options: { runs: number; mbytes: number; rateMbit?: number; report: string }) => {
      if (!Number.isInteger(options.runs) || options.runs < 1) throw new InvalidArgumentError("--runs must be a positive integer");
      await preflight();
      const dir = stateDir();
      const present = new Set(await existingNamespaces());
      const labUp = labNamespaceNames(labContext(dir).layout).every((ns) => present.has(ns)) && readWanSpec(labContext(dir).layout) !== undefined;
      const wanOptions = {
        ...(wanOptionsFromEnv({ ...process.env, PGHA_LAB_WAN: "1" }) ?? DEFAULT_WAN_OPTIONS),
        ...(options.rateMbit !== undefined ? { rateMbit: options.rateMbit } : {}),
      };
      if (labUp && options.rateMbit !== undefined) throw new Error("--rate-mbit only applies when the bench brings up its own network; the running lab has its own settings");
      const layout = labUp ? labContext(dir).layout : (await labNetworkUp(dir, say, { wan: wanOptions })).layout;
      const settings = readWanSpec(layout)?.options ?? wanOptions;
      const runs: BulkIsolation[] = [];
      try {
        const transport = new LabTransport(layout);
        for (let i = 1; i <= options.runs; i++) {
          const m = await measureBulkIsolation(layout, transport, { mbytes: options.mbytes });
          runs.push(m);
          say(`run ${i}/${options.runs}: ${bulkIsolationLine(m)}`);
        }
      } finally {
        if (!labUp) await labDown(dir, say);
      }
      const figure = (label: string, unit: string, values: number[]): string =>
        `| ${label} | ${quantile(values, 0.5).toFixed(2)} ${unit} | ${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)} |`;
      const lines = [
        `${options.runs} runs, ${options.mbytes} MiB each, per-path capacity ${settings.rateMbit || "unlimited"} Mbit/s, buffer ${settings.queueMs} ms`,
        "| figure | median | min–max |",
        "|---|---:|---:|",
        figure(
          "ping tokyo → seoul, idle (median of 40)",
          "ms",
          runs.map((m) => m.idle.medianMs),
        ),
        figure(
          "ping tokyo → seoul, during the transfer (median of 40)",
          "ms",
          runs.map((m) => m.during.medianMs),
        ),
        figure(
          "  the same, p90",
          "ms",
          runs.map((m) => m.during.p90Ms),
        ),
        figure(
          "transfer, each way",
          "MiB/s",
          runs.map((m) => m.bulk.mibPerSecond),
        ),
        figure(
          "packets through the delay line",
          "/s",
          runs.map((m) => m.delayLine.packetsPerSecond),
        ),
        figure(
          "delay line CPU",
          "% of a core",
          runs.map((m) => m.delayLine.cpuShare * 100),
        ),
        figure(
          "written back after the due time, mean",
          "ms",
          runs.map((m) => m.delayLine.lateMeanMs),
        ),
        figure(
          "tail drops on the transfer's paths",
          "packets",
          runs.map((m) => m.delayLine.queueDrops),
        ),
      ];
      fs.mkdirSync(path.dirname(options.report), { recursive: true });
      fs.writeFileSync(options.report, JSON.stringify({ wan: settings, runs }, null, 2));
      process.stdout.write(`${lines.join("\n")}\n`);
      say(`report: ${options.report}`);
    });

  wan
    .command("compare")
    .description("drill reports side by side: RTO, RPO and split brain of a LAN and a WAN run")
    .argument("<lanReport>")
    .argument("<wanReport>")
    .action((lanFile: string, wanFile: string) => {
      const lan = JSON.parse(fs.readFileSync(lanFile, "utf8")) as ReportLike;
      const wanReport = JSON.parse(fs.readFileSync(wanFile, "utf8")) as ReportLike;
      process.stdout.write(`${compareDrills(lan, wanReport)}\n`);
    });
}
