import type { ClusterAccess } from "../checks/cluster";
import { sqlOnNode } from "../checks/cluster";
import { sleep } from "./exec";
import type { RunningCommand } from "../checks/transport";

export const WRITES_TABLE = "lab_writes";
export const WRITER_PATH = "/etc/pgha-lab/writer.py";

export interface WriteRecord {
  seq?: number;
  ok?: boolean;
  /** CLOCK_MONOTONIC seconds (comparable with monotonicSeconds()). */
  t: number;
  /** Unix seconds when the write was acknowledged (the nodes share this clock). */
  wall?: number;
  /** Milliseconds from the attempt's start to its acknowledgement: the write was sent after wall - ms/1000. */
  ms?: number;
  server?: string;
  err?: string;
  event?: string;
  unsafe?: string[];
}

/** Creates the drills' table on the leader (idempotent). */
export async function ensureWritesTable(access: ClusterAccess, leader: string): Promise<void> {
  await sqlOnNode(
    access,
    leader,
    `create table if not exists ${WRITES_TABLE} (run text not null, seq bigint not null, at timestamptz not null default clock_timestamp(), primary key (run, seq))`,
  );
}

/** The application writer running in the client namespace, writing through one HAProxy. */
export class Writer {
  readonly records: WriteRecord[] = [];
  private constructor(
    readonly run: string,
    readonly target: { host: string; port: number },
    private readonly command: RunningCommand,
  ) {
    command.onLine((line) => {
      try {
        this.records.push(JSON.parse(line) as WriteRecord);
      } catch {
        // not a record
      }
    });
  }

  static start(access: ClusterAccess, target: { host: string; port: number }, run: string, options: { intervalMs?: number; maxSeconds?: number } = {}): Writer {
    const argv = [
      "python3",
      WRITER_PATH,
      "--host",
      target.host,
      "--port",
      String(target.port),
      "--run",
      run,
      "--interval",
      String((options.intervalMs ?? 50) / 1000),
      "--max-seconds",
      String(options.maxSeconds ?? 600),
      "--sslrootcert",
      access.clientFiles.caCert,
    ];
    return new Writer(run, target, access.transport.spawn(access.client, argv, { env: { PGPASSWORD: access.superuserPassword } }));
  }

  acks(): WriteRecord[] {
    return this.records.filter((r) => r.ok === true);
  }

  /** Waits until `predicate` holds over the records, or the budget runs out (returns false). */
  async waitUntil(predicate: (records: WriteRecord[]) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (predicate(this.records)) return true;
      await sleep(100);
    }
    return predicate(this.records);
  }

  async warmUp(acks: number, timeoutMs = 30_000): Promise<void> {
    if (!(await this.waitUntil((records) => records.filter((r) => r.ok).length >= acks, timeoutMs))) {
      const last = this.records
        .slice(-3)
        .map((r) => JSON.stringify(r))
        .join(" ");
      throw new Error(
        `writer via ${this.target.host}:${this.target.port} got fewer than ${acks} acknowledged writes in ${timeoutMs / 1000} s; last records: ${last || "none"}; stderr: ${this.command.stderr().trim().slice(-500)}`,
      );
    }
  }

  async stop(): Promise<void> {
    await this.command.stop();
  }
}

export interface WriteAnalysis {
  acked: number;
  unknown: number;
  unsafe: number;
  lastBefore?: WriteRecord;
  firstAfter?: WriteRecord;
  /**
   * The write outage caused by the fault: the longest gap between consecutive
   * acknowledged writes from the last one before the instant on. When writes
   * stop right at the instant this is exactly "last acknowledged before the
   * fault → first after it"; when the primary keeps accepting writes for a
   * while (a switchover takes a few seconds to begin) it is the real outage.
   */
  rtoSeconds?: number;
  /** Literally: first acknowledged write after the instant minus the last one before it. */
  firstGapSeconds?: number;
  /** Largest gap between consecutive acknowledgements after the instant. */
  maxGapAfterSeconds: number;
  servers: string[];
}

export function analyseWrites(records: WriteRecord[], instant: number): WriteAnalysis {
  const acks = records.filter((r) => r.ok === true);
  const before = acks.filter((r) => r.t < instant);
  const after = acks.filter((r) => r.t >= instant);
  const lastBefore = before.at(-1);
  const firstAfter = after[0];
  let maxGap = 0;
  for (let i = 1; i < after.length; i++) maxGap = Math.max(maxGap, (after[i]?.t ?? 0) - (after[i - 1]?.t ?? 0));
  const firstGap = lastBefore && firstAfter ? firstAfter.t - lastBefore.t : undefined;
  return {
    acked: acks.length,
    unknown: records.filter((r) => r.ok === false).length,
    unsafe: acks.filter((r) => r.unsafe?.length).length,
    lastBefore,
    firstAfter,
    rtoSeconds: firstGap === undefined ? undefined : Math.max(firstGap, maxGap),
    firstGapSeconds: firstGap,
    maxGapAfterSeconds: maxGap,
    servers: [...new Set(acks.map((r) => r.server ?? "?"))],
  };
}

/** Acknowledged sequence numbers missing on `node` (the new primary): the RPO in commits. */
export async function missingAcks(access: ClusterAccess, node: string, writer: Writer): Promise<number[]> {
  const rows = await sqlOnNode(access, node, `select seq from ${WRITES_TABLE} where run = '${writer.run.replace(/'/g, "''")}'`, 30_000);
  const present = new Set(rows.map((r) => Number(r[0])));
  return writer
    .acks()
    .map((r) => r.seq as number)
    .filter((seq) => !present.has(seq));
}

/**
 * Writes acknowledged by the old primary after the new one acknowledged its
 * first (split brain: two primaries accepting writes at once).
 */
export function splitBrainAcks(records: WriteRecord[], oldPrimaryIp: string, instant: number): WriteRecord[] {
  const acks = records.filter((r) => r.ok === true && r.t >= instant);
  const firstNew = acks.find((r) => r.server !== oldPrimaryIp);
  if (!firstNew) return [];
  return acks.filter((r) => r.server === oldPrimaryIp && r.t > firstNew.t);
}
