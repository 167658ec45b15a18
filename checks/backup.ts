/**
 * Backups as readiness sees them (issue #14): is WAL reaching every
 * repository, and how old is each repository's newest good backup. Read on
 * the primary through the transport: PostgreSQL's pg_stat_archiver and
 * `pgbackrest info`.
 */
import type { ClusterAccess } from "./cluster";
import { sqlOnNode } from "./cluster";
import type { Check } from "./readiness";

/** One repository as `pgbackrest info --output=json` reports it. */
export interface RepositoryInfo {
  index: number;
  /** pgBackRest's status code: 0 ok, 2 no valid backups yet; anything else is a fault (unreachable, mismatch …). */
  statusCode: number;
  statusMessage: string;
  /** Newest WAL segment in the repository's archive. */
  archiveMax?: string;
  /** Backups without error, oldest first: label, type and end (Unix seconds). */
  backups: BackupSet[];
  /** The newest of them. */
  lastBackup?: BackupSet;
}

export interface BackupSet {
  label: string;
  type: string;
  stop: number;
}

export interface StanzaInfo {
  stanza: string;
  statusCode: number;
  statusMessage: string;
  repositories: RepositoryInfo[];
}

interface InfoJson {
  name: string;
  status: { code: number; message: string };
  repo?: { key: number; status: { code: number; message: string } }[];
  archive?: { database: { "repo-key": number }; max?: string | null }[];
  backup?: { label: string; type: string; error?: boolean; timestamp: { stop: number }; database: { "repo-key": number } }[];
}

/** `pgbackrest info --output=json` of one stanza, per repository. */
export function parseStanzaInfo(json: string, stanza: string): StanzaInfo {
  const all = JSON.parse(json) as InfoJson[];
  const info = all.find((s) => s.name === stanza);
  if (!info) throw new Error(`pgbackrest info knows no stanza ${stanza}`);
  const repositories = (info.repo ?? []).map((repo): RepositoryInfo => {
    const archives = (info.archive ?? []).filter((a) => a.database["repo-key"] === repo.key && a.max);
    const good = (info.backup ?? []).filter((b) => b.database["repo-key"] === repo.key && !b.error).sort((a, b) => a.timestamp.stop - b.timestamp.stop);
    const last = good[good.length - 1];
    return {
      index: repo.key,
      statusCode: repo.status.code,
      statusMessage: repo.status.message,
      archiveMax: archives
        .map((a) => a.max as string)
        .sort()
        .pop(),
      backups: good.map((b) => ({ label: b.label, type: b.type, stop: b.timestamp.stop })),
      lastBackup: last ? { label: last.label, type: last.type, stop: last.timestamp.stop } : undefined,
    };
  });
  return { stanza, statusCode: info.status.code, statusMessage: info.status.message, repositories };
}

/** pgBackRest on a node, as postgres (the repositories' cipher passphrase is readable by it only). */
export async function pgbackrest(access: ClusterAccess, node: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return access.transport.run(node, ["pgbackrest", `--stanza=${access.plan.backup.stanza}`, ...args], { user: "postgres", timeoutMs });
}

export async function stanzaInfo(access: ClusterAccess, node: string): Promise<StanzaInfo> {
  const result = await pgbackrest(access, node, ["--output=json", "info"]);
  if (result.code !== 0) throw new Error(`pgbackrest info on ${node}: ${result.stderr.trim() || result.stdout.trim()}`);
  return parseStanzaInfo(result.stdout, access.plan.backup.stanza);
}

/** pg_stat_archiver of the primary. */
export interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal?: string;
  failedCount: number;
  lastFailedWal?: string;
  /** The last failure came after the last success: archiving is failing now. */
  failing: boolean;
}

export async function archiverStats(access: ClusterAccess, leader: string): Promise<ArchiverStats> {
  const [row] = await sqlOnNode(
    access,
    leader,
    "select archived_count, coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, ''), " +
      "coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) from pg_stat_archiver",
  );
  if (!row) throw new Error(`pg_stat_archiver on ${leader} returned no row`);
  const [archived, lastArchived, failed, lastFailed, failing] = row;
  return {
    archivedCount: Number(archived),
    lastArchivedWal: lastArchived || undefined,
    failedCount: Number(failed),
    lastFailedWal: lastFailed || undefined,
    failing: failing === "t",
  };
}

/** Status codes of a healthy repository: ok, or no backup yet (a new cluster, before its first). */
const HEALTHY_REPOSITORY = new Set([0, 2]);

function age(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/**
 * Two checks, both on the primary:
 * - `archiving`: at least one WAL segment archived, the last failure (if any)
 *   older than the last success, and every planned repository reachable with
 *   the stanza in it. Failing here means WAL is piling up in pg_wal and the
 *   cluster is not ready.
 * - `backups`: every repository's newest good backup and its age; ok when each
 *   repository answers (a new cluster has none for its first minutes).
 */
export async function checkBackups(access: ClusterAccess, leader: string | undefined, now = Date.now()): Promise<Check[]> {
  if (!leader) return [{ id: "archiving", ok: false, detail: "no leader" }];
  const problems: string[] = [];
  let archiver: ArchiverStats | undefined;
  let info: StanzaInfo | undefined;
  try {
    archiver = await archiverStats(access, leader);
  } catch (error) {
    problems.push((error as Error).message);
  }
  try {
    info = await stanzaInfo(access, leader);
  } catch (error) {
    problems.push((error as Error).message);
  }
  if (archiver) {
    if (!archiver.lastArchivedWal) problems.push("no WAL segment archived yet");
    if (archiver.failing) problems.push(`archive_command failing (last failed ${archiver.lastFailedWal}, ${archiver.failedCount} failures)`);
  }
  const planned = access.plan.backup.repositories.map((repo) => repo.index);
  if (info) {
    for (const index of planned) {
      const repo = info.repositories.find((r) => r.index === index);
      if (!repo) problems.push(`repo${index} missing from pgbackrest info`);
      else if (!HEALTHY_REPOSITORY.has(repo.statusCode)) problems.push(`repo${index}: ${repo.statusMessage} (status ${repo.statusCode})`);
    }
  }
  const checks: Check[] = [
    {
      id: "archiving",
      ok: problems.length === 0,
      detail:
        problems.join("; ") ||
        `${leader}: ${archiver?.archivedCount} segments archived, last ${archiver?.lastArchivedWal}; in every repository up to ${info?.repositories.map((r) => `repo${r.index}=${r.archiveMax ?? "-"}`).join(" ")}`,
    },
  ];
  if (info) {
    const ages = info.repositories.map((r) =>
      r.lastBackup ? `repo${r.index} ${r.lastBackup.type} ${r.lastBackup.label} (${age(now / 1000 - r.lastBackup.stop)} old)` : `repo${r.index} none yet`,
    );
    checks.push({ id: "backups", ok: info.repositories.every((r) => HEALTHY_REPOSITORY.has(r.statusCode)), detail: ages.join("; ") });
  }
  return checks;
}
