import { NODE_PATHS, postgresPaths, repositoryOf, SERVICE_USERS, type ClusterPlan, type NodePlan } from "../plan";
import type { RenderedUnit } from "./systemd";

/**
 * pgBackRest on the database nodes (docs/backups.md): one S3 repository per
 * region, `repo<index>` in region order on every node, so `pgbackrest info`
 * reads the same on each. archive-push writes every WAL segment to every
 * repository; backups go to every repository, one after the other, from the
 * primary. A node restores and clones from its own region's repository.
 */

/** The full and differential backups, each a oneshot service and its timer. */
export type BackupType = "full" | "diff";

export const BACKUP_TYPES: readonly BackupType[] = ["full", "diff"];

/** After each boot, when the differential timer fires once (the first backup of a new cluster). */
export const FIRST_BACKUP_DELAY = "1min";

export function backupServiceName(type: BackupType): string {
  return `pgha-backup-${type}.service`;
}

export function backupTimerName(type: BackupType): string {
  return `pgha-backup-${type}.timer`;
}

/** One INI section as data: option → value (a list repeats the option). */
export type IniSection = Record<string, string | number>;

const SAFE_INI = /^[^\n\r]*$/;

export function emitIni(sections: Record<string, IniSection>): string {
  const lines: string[] = [];
  for (const [name, options] of Object.entries(sections)) {
    if (lines.length > 0) lines.push("");
    lines.push(`[${name}]`);
    for (const [option, value] of Object.entries(options)) {
      const text = String(value);
      if (!SAFE_INI.test(text)) throw new Error(`pgbackrest.conf: value of ${name}.${option} spans lines`);
      lines.push(`${option}=${text}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/**
 * How much WAL archive-push may queue locally while a repository is out of
 * reach before it drops segments (and says so in its log): the share of
 * PGDATA's volume that replication slots may also hold. Past it, point-in-time
 * recovery has a gap until the next backup, but the primary keeps its disk:
 * a region's S3 outage must not stop the database of the other two.
 */
export function archivePushQueueMax(plan: ClusterPlan): string {
  return `${Math.max(1, Math.floor(plan.config.instances.dataVolumeGiB * 0.1))}GiB`;
}

/** pgBackRest's archive-timeout for archive-push (see pgbackrestConfig). */
const ARCHIVE_PUSH_WAIT_SECONDS = 10;

/** pgbackrest.conf's sections: `[global]` (the repositories, archiving, logging) and the stanza's. */
export function pgbackrestConfig(plan: ClusterPlan, node: NodePlan): Record<string, IniSection> {
  if (!node.roles.has("postgres")) throw new Error(`${node.name} has no postgres role`);
  const global: IniSection = {};
  for (const repo of plan.backup.repositories) {
    const r = `repo${repo.index}`;
    Object.assign(global, {
      [`${r}-type`]: "s3",
      [`${r}-s3-bucket`]: repo.bucket,
      [`${r}-s3-endpoint`]: repo.endpoint,
      [`${r}-s3-region`]: repo.awsRegion,
      // Credentials from the instance role (IMDSv2), rotated by EC2: none on disk.
      [`${r}-s3-key-type`]: "auto",
      [`${r}-path`]: repo.path,
      // The passphrase is in conf.d (NODE_PATHS.pgbackrestCipherConf), fetched from SSM at boot.
      [`${r}-cipher-type`]: "aes-256-cbc",
      [`${r}-retention-full-type`]: "time",
      [`${r}-retention-full`]: plan.backup.retentionDays,
      // Small files in bundles, and block-level incrementals: fewer S3 requests, smaller differentials.
      [`${r}-bundle`]: "y",
      [`${r}-block`]: "y",
    });
  }
  Object.assign(global, {
    "archive-async": "y",
    "spool-path": NODE_PATHS.pgbackrestSpool,
    "archive-push-queue-max": archivePushQueueMax(plan),
    "compress-type": "zst",
    "process-max": 2,
    // Backups start with an immediate checkpoint: a scheduled backup or a drill does not wait up to checkpoint_timeout.
    "start-fast": "y",
    // No resuming of an aborted backup. Here a backup is aborted when its primary fails, and the resumer is another
    // node: it completes the old label while the old primary, back on the network, can still finish uploads into that
    // same label. The backup-during-failover drill caught exactly that (a set that failed to decrypt on restore).
    // Each backup writes its own label instead; an aborted one is removed by the next.
    resume: "n",
    "log-path": NODE_PATHS.pgbackrestLogDir,
    "log-level-console": "info",
    "log-level-file": "detail",
  });
  const pg = postgresPaths(plan.config.versions.postgresMajor);
  // PostgreSQL runs archive-push and archive-get for every segment and logs what they print: only warnings and errors.
  const quiet = { "log-level-console": "warn" };
  return {
    global,
    // How long PostgreSQL's archive_command waits for the async process to report a segment pushed. pgBackRest's
    // 60 s default, with its wait's Fibonacci back-off (gaps of 20 s and more late in the wait), held an isolated
    // primary's shutdown for 50-90 s after Patroni demoted it (WAN lab, region-loss; PostgreSQL's archiver tries
    // three times before it lets the postmaster stop). A segment that takes longer only fails this call: the async
    // process goes on, and the next call a second later finds it pushed.
    "global:archive-push": { ...quiet, "archive-timeout": ARCHIVE_PUSH_WAIT_SECONDS },
    "global:archive-get": quiet,
    [plan.backup.stanza]: { "pg1-path": pg.dataDir, "pg1-socket-path": NODE_PATHS.postgresSocketDir, "pg1-user": SERVICE_USERS.postgres },
  };
}

export function renderPgbackrestConfig(plan: ClusterPlan, node: NodePlan): string {
  return emitIni(pgbackrestConfig(plan, node));
}

/** The command PostgreSQL archives each WAL segment with (asynchronously, through the spool). */
export function archiveCommand(plan: ClusterPlan): string {
  return `pgbackrest --stanza=${plan.backup.stanza} archive-push "%p"`;
}

/** Where a replica or a restore reads WAL it does not have from. */
export function restoreCommand(plan: ClusterPlan): string {
  return `pgbackrest --stanza=${plan.backup.stanza} archive-get %f "%p"`;
}

/**
 * Patroni's replica method `pgbackrest`: restore the newest backup from the
 * node's own region's repository as a standby, then stream from the primary.
 * A Singapore replica reads Singapore's bucket, not Seoul's primary across the
 * WAN. Without a backup yet (a new cluster) it fails at once and Patroni goes
 * on to `basebackup`.
 */
export function pgbackrestReplicaMethod(plan: ClusterPlan, node: NodePlan): Record<string, unknown> {
  return {
    command: `/usr/bin/pgbackrest --stanza=${plan.backup.stanza} --repo=${repositoryOf(plan, node).index} restore --type=standby`,
    no_params: true,
  };
}

/** The backup timers' services: `pgha-backup <type> <repository index …>` as postgres; a standby skips. */
export function backupUnits(plan: ClusterPlan): RenderedUnit[] {
  const repositories = plan.backup.repositories.map((repo) => String(repo.index));
  const schedule: Record<BackupType, string> = { full: plan.backup.fullSchedule, diff: plan.backup.differentialSchedule };
  return BACKUP_TYPES.flatMap((type): RenderedUnit[] => [
    {
      name: backupServiceName(type),
      unit: {
        Unit: {
          Description: `pgBackRest ${type === "full" ? "full" : "differential"} backup of ${plan.backup.stanza} to every repository (on the primary only)`,
          Documentation: "https://pgbackrest.org/command.html#command-backup",
          After: "patroni.service",
        },
        Service: {
          Type: "oneshot",
          User: SERVICE_USERS.postgres,
          Group: SERVICE_USERS.postgres,
          ExecStart: [NODE_PATHS.backup, plan.backup.stanza, type, ...repositories].join(" "),
          // A backup takes as long as the database is big; only systemd's default 90 s would stop it.
          TimeoutStartSec: "infinity",
          // pgha-backup exits when its member stops being the primary; systemd then stops the pgBackRest processes left
          // in the unit (KillMode=control-group), and kills those that are still there after this.
          TimeoutStopSec: "30s",
          Nice: 10,
          IOSchedulingClass: "idle",
        },
      },
    },
    {
      name: backupTimerName(type),
      unit: {
        Unit: { Description: `${type === "full" ? "Full" : "Differential"} backups of ${plan.backup.stanza}: ${schedule[type]}` },
        // Persistent: a run missed while the node was down happens when it is back. The differential timer also
        // fires a minute after each boot: pgBackRest turns a differential with no full backup before it into a
        // full one, so a new cluster has its first backup minutes after it is up, not at the next full schedule.
        // On any other boot it is a small differential (or nothing, on a standby).
        Timer: { OnCalendar: schedule[type], Persistent: "true", ...(type === "diff" ? { OnActiveSec: FIRST_BACKUP_DELAY } : {}) },
        Install: { WantedBy: "timers.target" },
      },
    },
  ]);
}

/**
 * The primary's upkeep, every few seconds on each database node (it acts only
 * where PostgreSQL is the primary): the rejoin nudge below.
 */
export const PRIMARY_UPKEEP_SERVICE = "pgha-primary-upkeep.service";
export const PRIMARY_UPKEEP_TIMER = "pgha-primary-upkeep.timer";
/** How often the primary looks for a standby waiting on its next WAL record. */
export const PRIMARY_UPKEEP_INTERVAL = "10s";
/** A walsender younger than this is a standby that just (re)connected. */
const REJOIN_WINDOW = "2 minutes";

/**
 * The nudge's query. pg_rewind sets a rejoining standby's minimum recovery
 * point to the primary's WAL insert position, and the standby accepts no
 * connection until it has replayed a record ending there. On an idle primary
 * after archive_timeout's segment switch that position is just past the new
 * segment's page header, where no record ends until the next write: the old
 * primary stays "starting" for as long as the application is quiet (seen in
 * the WAN lab's host-loss drill: minRecoveryPoint 0/1D000028, idle, stuck).
 * Insert ahead of flush with nothing to write is that state; one flushed
 * logical message ends it. Only while a walsender is new, so a quiet cluster
 * is not kept switching a segment every archive_timeout. CASE keeps the
 * order: the WAL functions fail on a standby.
 */
export const REJOIN_NUDGE_SQL = [
  "SELECT CASE WHEN pg_is_in_recovery() THEN NULL",
  "WHEN pg_current_wal_insert_lsn() > pg_current_wal_flush_lsn()",
  `AND EXISTS (SELECT 1 FROM pg_stat_replication WHERE backend_start > now() - interval '${REJOIN_WINDOW}')`,
  "THEN pg_logical_emit_message(false, 'pgha-rejoin', '', true) END",
].join(" ");

/** The primary's upkeep (the rejoin nudge, {@link REJOIN_NUDGE_SQL}) as a oneshot service and its timer, on every database node. */
export function primaryUpkeepUnits(): RenderedUnit[] {
  return [
    {
      name: PRIMARY_UPKEEP_SERVICE,
      unit: {
        Unit: { Description: "Primary upkeep: one WAL record when a standby that just rejoined waits on an idle primary", After: "patroni.service" },
        Service: {
          Type: "oneshot",
          User: SERVICE_USERS.postgres,
          Group: SERVICE_USERS.postgres,
          ExecStart: `/usr/bin/psql -X -q -A -t -v ON_ERROR_STOP=1 -d postgres -c "${REJOIN_NUDGE_SQL}"`,
          // psql's 2 is "no connection": PostgreSQL stopped or a standby not yet consistent, nothing to do here.
          SuccessExitStatus: 2,
          // A postmaster late in its shutdown still holds its socket but accepts nobody: without a bound psql waited
          // there 30 s (WAN lab, isolated primary). The next run is 10 s away anyway.
          Environment: "PGCONNECT_TIMEOUT=5",
          TimeoutStartSec: "30s",
        },
      },
    },
    {
      name: PRIMARY_UPKEEP_TIMER,
      unit: {
        Unit: { Description: `The primary's upkeep every ${PRIMARY_UPKEEP_INTERVAL}` },
        Timer: { OnActiveSec: PRIMARY_UPKEEP_INTERVAL, OnUnitActiveSec: PRIMARY_UPKEEP_INTERVAL, AccuracySec: "1s" },
        Install: { WantedBy: "timers.target" },
      },
    },
  ];
}

/** What the boot step enables and starts on a database node: the backup timers and the primary upkeep's (the services run when they fire). */
export function backupStartOrder(node: NodePlan): string[] {
  return node.roles.has("postgres") ? [...BACKUP_TYPES.map(backupTimerName), PRIMARY_UPKEEP_TIMER] : [];
}
