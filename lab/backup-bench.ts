/**
 * The backup figures (README "Backups"): `npm run lab -- backup-bench`.
 * On a pgbench dataset of known size: the full backup to every repository and
 * its throughput, the whole cluster's restore, and archive lag under load
 * (seconds from a commit to its WAL segment in every repository). Printed and
 * recorded, never asserted: they are speeds of this machine.
 */
import { clusterView, sqlOnNode } from "../checks/cluster";
import { archiverStats } from "../checks/backup";
import { restoreCluster, takeBackup } from "../ops/restore";
import { median } from "./drills";
import { sleep } from "./exec";
import type { LabContext } from "./lab";
import { CLIENT } from "./layout";
import { conninfo, pgbench } from "./wan-measure";

const PGBENCH = "/usr/lib/postgresql/17/bin/pgbench";

export interface Spread {
  median?: number;
  min?: number;
  max?: number;
  n: number;
}

function spread(values: number[]): Spread {
  return { median: median(values), min: values.length ? Math.min(...values) : undefined, max: values.length ? Math.max(...values) : undefined, n: values.length };
}

export interface BackupBench {
  scale: number;
  databaseMB: number;
  repositories: number;
  /** Seconds of one full backup to every repository, and MB of database read per second and repository. */
  fullBackupSeconds: Spread;
  fullBackupMBps: Spread;
  /** The whole cluster's restore to the end of the archive (ops/restore.ts), and the leader's own restore in it. */
  restoreSeconds: Spread;
  leaderRestoreSeconds: Spread;
  /** Seconds from a commit under pgbench load to its segment archived, sampled once a second. */
  archiveLagSeconds: Spread;
}

async function leader(lab: LabContext): Promise<string> {
  const view = await clusterView(lab.access);
  const found = view.members.find((m) => m.role === "leader")?.name;
  if (!found) throw new Error("no leader");
  return found;
}

/** Archive lag: for a commit at t0, the time until pg_stat_archiver's last archived segment reaches t0's segment. */
async function archiveLag(lab: LabContext, seconds: number, log: (line: string) => void): Promise<number[]> {
  const primary = await leader(lab);
  const load = pgbench(lab, { clients: 4, seconds, mode: "sync", builtin: "tpcb-like" });
  const lags: number[] = [];
  const pending: { segment: string; at: number }[] = [];
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline + 30_000) {
    const now = Date.now();
    if (now < deadline) {
      const [row] = await sqlOnNode(lab.access, primary, "select pg_walfile_name(pg_current_wal_insert_lsn())");
      if (row?.[0]) pending.push({ segment: row[0], at: now });
    }
    const archived = (await archiverStats(lab.access, primary)).lastArchivedWal ?? "";
    // Same timeline: segment names order as WAL does.
    while (pending[0] && archived >= pending[0].segment) lags.push((Date.now() - (pending.shift()?.at ?? now)) / 1000);
    if (now >= deadline && pending.length === 0) break;
    await sleep(1000);
  }
  await load;
  if (pending.length) log(`archive lag: ${pending.length} samples not archived 30 s after the load`);
  return lags;
}

export async function backupBench(lab: LabContext, options: { scale: number; repeat: number; loadSeconds: number; log: (line: string) => void }): Promise<BackupBench> {
  const { log } = options;
  log(`pgbench -i -s ${options.scale} through HAProxy`);
  const init = await lab.transport.run(CLIENT, [PGBENCH, "-i", "-q", "-s", String(options.scale), conninfo(lab)], {
    env: { PGPASSWORD: lab.access.superuserPassword },
    timeoutMs: 1_800_000,
  });
  if (init.code !== 0) throw new Error(`pgbench -i failed: ${(init.stderr || init.stdout).trim().slice(-500)}`);
  const primary = await leader(lab);
  const [size] = await sqlOnNode(lab.access, primary, "select sum(pg_database_size(datname)) from pg_database");
  const databaseMB = Number(size?.[0] ?? 0) / 1e6;
  const repositories = lab.plan.backup.repositories.length;
  log(`database ${databaseMB.toFixed(0)} MB; ${repositories} repositories`);
  const backups: number[] = [];
  const restores: number[] = [];
  const leaderRestores: number[] = [];
  for (let run = 1; run <= options.repeat; run++) {
    const backup = await takeBackup(lab.access, "full");
    backups.push(backup.seconds);
    log(`full backup ${run}: ${backup.seconds.toFixed(1)} s to ${repositories} repositories`);
  }
  for (let run = 1; run <= options.repeat; run++) {
    const restore = await restoreCluster(lab.access, { log, healthBudgetMs: 900_000 });
    restores.push(restore.seconds.total);
    leaderRestores.push(restore.seconds.leaderRestore);
    log(`restore ${run}: ${restore.seconds.total.toFixed(1)} s (leader ${restore.seconds.leaderRestore.toFixed(1)} s)`);
  }
  const lags = await archiveLag(lab, options.loadSeconds, log);
  return {
    scale: options.scale,
    databaseMB: Math.round(databaseMB),
    repositories,
    fullBackupSeconds: spread(backups),
    fullBackupMBps: spread(backups.map((s) => databaseMB / (s / repositories))),
    restoreSeconds: spread(restores),
    leaderRestoreSeconds: spread(leaderRestores),
    archiveLagSeconds: spread(lags),
  };
}
