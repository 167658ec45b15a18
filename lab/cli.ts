import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Command } from "commander";
import { clearEnvCache } from "../checks/cluster";
import { selectDrills, type DrillSummary } from "./drills";
import { backupBench } from "./backup-bench";

import { CLIENT_NS, DEFAULT_STATE_DIR } from "./layout";
import { namespacePids } from "./netns";
import { acquireLabLock } from "./lock";
import { labContext, labDown, labPlan, labUp, preflight } from "./lab";
import { labImages } from "./images";
import { ALL_DRILLS, DEFAULT_DRILLS, runDrills, summaryTable, waitHealthy } from "./runner";
import type { Check, Verification } from "../checks/readiness";
import { verifyCluster } from "./verify";
import { rebuildReplica, restoreCluster, takeBackup, backupType } from "../ops/restore";
import { defaultReportInputs, readLabReport, renderDrillReport, REPORT_SCREENSHOT, reportTitle } from "./report";
import { cachedRootfs, screenshotHtml } from "./chromium";
import { ensureWritesTable, WRITER_PATH } from "./writer";
import { readWanSpec, wanHealth, wanOptionsFromEnv, type WanSpec } from "./wan";
import { nonNegativeNumber, registerWanCommands, wanUpOptions } from "./wan-cli";
import { LOCK_FREE_COMMANDS, positiveInt, registerSessionCommands, requireUp as requireLabUp } from "./session";

const program = new Command();
program
  .name("lab")
  .description("Local lab: boots the rendered cluster configuration in network namespaces on this machine and drills failover.")
  .option("--state-dir <dir>", "where the lab keeps roots, PKI, logs and state", DEFAULT_STATE_DIR);

// One lab command at a time on this machine (see lab/lock.ts); `wan compare` and `report` only read reports, and
// psql/exec/logs are for use beside a running session (lab/session.ts).
program.hook("preAction", (_root, action) => {
  const words = [action.name()];
  for (let c = action.parent; c && c !== program; c = c.parent) words.unshift(c.name());
  const command = words.join(" ");
  if (command !== "wan compare" && command !== "report" && !LOCK_FREE_COMMANDS.includes(command)) acquireLabLock(`npm run lab -- ${command}`);
});

const stamp = (): string => new Date().toISOString().slice(11, 19);
const say = (line: string): void => void process.stderr.write(`${stamp()} ${line}\n`);

function stateDir(): string {
  return path.resolve(program.opts<{ stateDir: string }>().stateDir);
}

function printChecks(checks: Check[]): void {
  for (const check of checks) process.stdout.write(`${check.ok ? "ok  " : "FAIL"}  ${check.id.padEnd(62)}  ${check.detail}\n`);
}

function upRecordPath(): string {
  return path.join(stateDir(), "up.json");
}

/** `status` and `drill` need a lab that `up` built and that is still there. */
async function requireUp(): Promise<void> {
  await requireLabUp(stateDir());
}

/**
 * SIGTERM to the drills' writers in the client namespace (a chroot sharing
 * this PID namespace: found by `ip netns pids` and their argv, never by name).
 */
async function stopClientWriters(): Promise<void> {
  for (const pid of await namespacePids(CLIENT_NS)) {
    try {
      if (
        fs
          .readFileSync(`/proc/${String(pid)}/cmdline`, "utf8")
          .split("\0")
          .includes(WRITER_PATH)
      )
        process.kill(pid, "SIGTERM");
    } catch {
      // exited meanwhile
    }
  }
}

export interface UpRecord {
  timings: Record<string, number>;
  upToHealthySeconds: number;
  bootToHealthySeconds: number;
  verification: Verification;
  rootfs: string;
  at: string;
}

program
  .command("images")
  .description("build (once; cached) the machines' cloud image and the signed package mirror")
  .action(async () => {
    const { image, mirror } = await labImages(labPlan(), false);
    say(`image ${image}`);
    say(`mirror ${mirror.dir} (etcd ${mirror.etcd.version} ${mirror.etcd.sha256})`);
  });

program
  .command("up")
  .description("build the network, the lab's cloud and PKI, boot every node as a machine from its user-data, wait until healthy")
  .option("--timeout <seconds>", "budget for the cluster to become healthy after boot", positiveInt, 240)
  .option("--wan", "WAN emulator on: inter-region packets delayed by the plan's RTTs (also PGHA_LAB_WAN=1)")
  .option("--wan-jitter <ms>", "with --wan: uniform jitter ± ms per one-way delay", nonNegativeNumber)
  .option("--wan-loss <percent>", "with --wan: loss per packet and direction", nonNegativeNumber)
  .option("--wan-seed <n>", "with --wan: seed of the delay line's jitter/loss", nonNegativeNumber)
  .action(async (options: { timeout: number; wan?: boolean; wanJitter?: number; wanLoss?: number; wanSeed?: number }) => {
    process.once("SIGINT", () => {
      say("interrupted: run `npm run lab -- down` to remove what was built");
      process.exit(130);
    });
    const started = Date.now();
    const up = await labUp(stateDir(), say, { wan: wanUpOptions(options, wanOptionsFromEnv()) });
    const failed = up.machines.filter((m) => m.status !== "done");
    if (failed.length)
      throw new Error(`cloud-init did not finish cleanly on ${failed.map((m) => `${m.node} (${m.status})`).join(", ")}: see \`npm run lab -- logs NODE cloud-init\``);
    const bootStarted = started + ((up.timings.upSeconds ?? 0) - (up.timings.bootSeconds ?? 0)) * 1000;
    const lab = labContext(stateDir());
    say("waiting for the cluster to pass every status check");
    let lastFailures = "";
    const verification = await waitHealthy(lab, options.timeout * 1000, (v) => {
      const failing = v.checks.filter((c) => !c.ok).map((c) => c.id);
      const failures = failing.length > 3 ? `${failing.slice(0, 3).join(", ")} and ${failing.length - 3} more` : failing.join(", ");
      if (failures && failures !== lastFailures) say(`not yet (${failing.length} checks failing): ${failures}`);
      lastFailures = failures;
    });
    const record: UpRecord = {
      timings: up.timings,
      upToHealthySeconds: (Date.now() - started) / 1000,
      bootToHealthySeconds: (Date.now() - bootStarted) / 1000,
      verification,
      rootfs: up.rootfs,
      at: new Date().toISOString(),
    };
    await ensureWritesTable(lab.access, verification.topology.leader as string);
    fs.writeFileSync(upRecordPath(), JSON.stringify(record, null, 2));
    printChecks(verification.checks);
    say(`healthy: ${record.upToHealthySeconds.toFixed(1)} s from \`up\` (machines' boot to healthy ${record.bootToHealthySeconds.toFixed(1)} s)`);
  });

program
  .command("status")
  .description("verify topology, replication, etcd, every HAProxy port and TLS enforcement")
  .option("--json", "print the checks as JSON")
  .option("--no-tls", "skip the TLS enforcement probes")
  .action(async (options: { json?: boolean; tls: boolean }) => {
    await preflight();
    await requireUp();
    const lab = labContext(stateDir());
    clearEnvCache();
    const verification = await verifyCluster(lab.access, { tls: options.tls });
    const wan = await wanHealth(lab.layout);
    verification.checks.push({ id: "network (WAN emulator)", ok: wan.ok, detail: wan.detail });
    verification.ok &&= wan.ok;
    if (options.json) process.stdout.write(`${JSON.stringify(verification, null, 2)}\n`);
    else printChecks(verification.checks);
    process.exitCode = verification.ok ? 0 : 1;
  });

program
  .command("drill")
  .description(`run drills (all but the backup drills by default): ${ALL_DRILLS.map((d, i) => `${i + 1}=${d.id}`).join(", ")}`)
  .argument("[names...]", "drill ids or numbers")
  .option("--repeat <n>", "repetitions per drill", positiveInt, 1)
  .option("--report <file>", "JSON report", path.join(process.cwd(), ".lab", "report.json"))
  .action(async (names: string[], options: { repeat: number; report: string }) => {
    await preflight();
    await requireUp();
    const drills = names.length ? selectDrills(names, ALL_DRILLS) : DEFAULT_DRILLS;
    const lab = labContext(stateDir());
    let interrupted = false;
    process.on("SIGINT", () => {
      if (interrupted) return;
      interrupted = true;
      say("interrupted: stopping the writer and reconnecting every host (cluster left as is; `status` tells)");
      void (async () => {
        await stopClientWriters();
        await lab.transport.healAll();
      })().finally(() => process.exit(130));
    });
    const started = Date.now();
    const logFile = path.join(stateDir(), "drills.log");
    say(`${drills.length} drill(s) × ${options.repeat}; details in ${logFile}`);
    const summaries = await runDrills(lab, drills, options.repeat, logFile);
    const report = buildReport(summaries, options.repeat, (Date.now() - started) / 1000);
    fs.mkdirSync(path.dirname(options.report), { recursive: true });
    fs.writeFileSync(options.report, JSON.stringify(report, null, 2));
    process.stdout.write(`\n${summaryTable(summaries)}\n`);
    if (report.boot) process.stdout.write(`boot-to-healthy: ${report.boot.upToHealthySeconds.toFixed(1)} s from \`up\`\n`);
    say(`report: ${options.report}`);
    process.exitCode = report.ok ? 0 : 1;
  });

program
  .command("down")
  .description("remove every namespace, mount and process of the lab (idempotent)")
  .action(async () => {
    const report = await labDown(stateDir(), say);
    say(`down: ${report.killed} process(es) stopped, ${report.unmounted} mount(s) removed, ${report.namespaces.length} namespace(s) deleted`);
    if (report.problems.length) {
      say(`problems: ${report.problems.join("; ")}`);
      process.exitCode = 1;
    }
  });

program
  .command("report")
  .description("write the drill report: one self-contained HTML file (timelines, RTO/RPO, topology) from the drills' JSON reports")
  .option("--out <file>", "the HTML file", path.join(process.cwd(), ".lab", "report.html"))
  .option("--input <json...>", "JSON reports (default: whichever of .lab/report.json, report-wan.json, report-boot.json exist)")
  .option("--screenshot <png>", "also screenshot the report's first screen with the rootfs's headless Chromium (root; no network)")
  .action(async (options: { out: string; input?: string[]; screenshot?: string }) => {
    const inputs = options.input?.map((file) => ({ file, title: reportTitle(file) })) ?? defaultReportInputs(path.join(process.cwd(), ".lab"));
    if (!inputs.length) throw new Error("no .lab/report*.json yet: run the drills first (`npm run lab -- drill` or `npm run test:lab`), or pass --input");
    const html = renderDrillReport(inputs.map((input) => ({ title: input.title, report: readLabReport(input.file) })));
    fs.mkdirSync(path.dirname(path.resolve(options.out)), { recursive: true });
    fs.writeFileSync(options.out, html);
    process.stdout.write(`${options.out}\n`);
    if (options.screenshot) {
      fs.writeFileSync(options.screenshot, await screenshotHtml(await cachedRootfs(), html, REPORT_SCREENSHOT));
      process.stdout.write(`${options.screenshot}\n`);
    }
  });

export function buildReport(
  summaries: DrillSummary[],
  repeat: number,
  seconds: number,
): {
  ok: boolean;
  at: string;
  machine: { cpus: number; memoryGiB: number; kernel: string };
  network: "lan" | "wan";
  wan?: WanSpec;
  boot?: UpRecord;
  repeat: number;
  drillSeconds: number;
  drills: DrillSummary[];
} {
  let boot: UpRecord | undefined;
  try {
    boot = JSON.parse(fs.readFileSync(upRecordPath(), "utf8")) as UpRecord;
  } catch {
    boot = undefined;
  }
  return {
    ok: summaries.every((s) => s.ok),
    at: new Date().toISOString(),
    machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release() },
    network: readWanSpec(labContext(stateDir()).layout) ? "wan" : "lan",
    wan: readWanSpec(labContext(stateDir()).layout),
    boot,
    repeat,
    drillSeconds: seconds,
    drills: summaries,
  };
}

program
  .command("backup")
  .description("take a backup now on the primary: systemctl start pgha-backup-<type>.service there (the timers' own unit)")
  .option("--type <type>", "full or diff", "full")
  .action(async (options: { type: string }) => {
    await preflight();
    await requireUp();
    const lab = labContext(stateDir());
    clearEnvCache();
    const report = await takeBackup(lab.access, backupType(options.type));
    say(`${report.node}: ${options.type} backup to every repository in ${report.seconds.toFixed(1)} s`);
  });

program
  .command("restore")
  .description("restore the whole cluster in place from the backup repositories (ops/restore.ts), to --target-time or to the end of the archive")
  .option("--target-time <timestamp>", "recover to just before the first commit after this instant (with a time zone, e.g. 2026-12-02 10:15:00+00)")
  .option("--node <name>", "the node that restores first and leads (default: the highest failover_priority)")
  .action(async (options: { targetTime?: string; node?: string }) => {
    await preflight();
    await requireUp();
    const lab = labContext(stateDir());
    clearEnvCache();
    const report = await restoreCluster(lab.access, { targetTime: options.targetTime, node: options.node, log: say, healthBudgetMs: 600_000 });
    say(`restored in ${report.seconds.total.toFixed(1)} s (the leader's own restore ${report.seconds.leaderRestore.toFixed(1)} s); leader ${report.leader}`);
  });

program
  .command("rebuild-replica")
  .description("re-create one member from its region's backup repository (patronictl reinit: create_replica_methods pgbackrest, then basebackup)")
  .argument("<member>", "the member to rebuild (not the leader)")
  .action(async (member: string) => {
    await preflight();
    await requireUp();
    const lab = labContext(stateDir());
    clearEnvCache();
    const report = await rebuildReplica(lab.access, member, { log: say, healthBudgetMs: 600_000 });
    say(`${member} rebuilt with ${report.method} in ${report.seconds.toFixed(1)} s`);
  });

program
  .command("backup-bench")
  .description("backup figures on a pgbench dataset: full backup to every repository, whole-cluster restore, archive lag under load")
  .option("--scale <n>", "pgbench scale (15 MB each)", positiveInt, 20)
  .option("--repeat <n>", "backups and restores", positiveInt, 3)
  .option("--load-seconds <n>", "pgbench load while archive lag is sampled", positiveInt, 60)
  .option("--out <file>", "JSON figures", path.join(process.cwd(), ".lab", "backup-bench.json"))
  .action(async (options: { scale: number; repeat: number; loadSeconds: number; out: string }) => {
    await preflight();
    await requireUp();
    const lab = labContext(stateDir());
    clearEnvCache();
    const figures = await backupBench(lab, { ...options, log: say });
    fs.mkdirSync(path.dirname(options.out), { recursive: true });
    fs.writeFileSync(options.out, JSON.stringify({ at: new Date().toISOString(), machine: { cpus: os.cpus().length }, ...figures }, null, 2));
    process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
  });

registerWanCommands(program, stateDir);
registerSessionCommands(program, stateDir);

program.parseAsync(process.argv).catch((error: unknown) => {
  say(`error: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
