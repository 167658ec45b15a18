import type { ClusterConfig } from "./config";
import { splitRegionPair } from "./validate";

export interface EtcdTiming {
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  /** Where the figures came from, for the README and the report. */
  source: "explicit" | "rtt";
  /** Largest RTT between regions holding etcd members (rtt source only). */
  maxRttMs?: number;
}

/** etcd's own defaults, kept as floors: a LAN cluster gets exactly them. */
const ETCD_DEFAULT_HEARTBEAT_MS = 100;
const ETCD_DEFAULT_ELECTION_MS = 1000;

function roundUpTo(value: number, step: number): number {
  return Math.ceil(value / step) * step;
}

/**
 * etcd's tuning guide: heartbeat interval about the round-trip time between
 * members (0.5–1.5×), election timeout at least 10× the RTT. We take the top
 * of the heartbeat range over the largest member-to-member RTT (jitter
 * headroom) and ten heartbeats for the election, never below etcd's LAN
 * defaults.
 */
export function deriveEtcdTiming(config: ClusterConfig): EtcdTiming {
  const { heartbeatIntervalMs, electionTimeoutMs } = config.etcd;
  if (heartbeatIntervalMs !== undefined && electionTimeoutMs !== undefined) {
    return { heartbeatIntervalMs, electionTimeoutMs, source: "explicit" };
  }
  const etcdRegions = new Set(config.regions.filter((r) => r.nodes.some((n) => n.roles.includes("etcd"))).map((r) => r.name));
  const names = config.regions.map((r) => r.name);
  const rtts = Object.entries(config.etcd.rttMs)
    .filter(([pair]) => splitRegionPair(pair, names).every((name) => etcdRegions.has(name)))
    .map(([, ms]) => ms);
  const maxRttMs = Math.max(0, ...rtts);
  const heartbeat = Math.max(ETCD_DEFAULT_HEARTBEAT_MS, roundUpTo(1.5 * maxRttMs, 10));
  return {
    heartbeatIntervalMs: heartbeat,
    electionTimeoutMs: Math.max(ETCD_DEFAULT_ELECTION_MS, 10 * heartbeat),
    source: "rtt",
    maxRttMs,
  };
}
