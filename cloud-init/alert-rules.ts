import { LEAF_EARLY_RENEWAL_HOURS, type ClusterPlan } from "../plan";
import { haproxyListeners } from "./haproxy";
import { dumpYaml } from "./yaml";

/**
 * The alert rules every region's Prometheus evaluates (NODE_PATHS.alertRules;
 * docs/monitoring.md "Alerts" explains each one and what to do).
 *
 * The metric names are the exporters' own, read in their sources:
 * - Patroni 4.0.7 `patroni/api.py` `do_GET_metrics`: patroni_primary (1 when
 *   PostgreSQL runs as primary), patroni_replica, patroni_sync_standby,
 *   patroni_xlog_location (pg_current_wal_flush_lsn() on the primary, 0 on the
 *   others), patroni_xlog_received_location and patroni_xlog_replayed_location
 *   (0 on the primary); labels scope and name.
 * - etcd v3.5.16 `server/etcdserver/metrics.go`: etcd_server_has_leader,
 *   etcd_server_leader_changes_seen_total, etcd_server_quota_backend_bytes;
 *   `server/mvcc/metrics.go`: etcd_mvcc_db_total_size_in_bytes.
 * - HAProxy 3.0 `addons/promex/service-prometheus.c`: haproxy_backend_active_servers
 *   (ST_I_PX_ACT) with the backend's name in label `proxy`.
 * - node_exporter v1.9.0 `collector/filesystem_common.go`: node_filesystem_avail_bytes,
 *   node_filesystem_size_bytes, labels device, mountpoint, fstype.
 * - pgha_certificate_expiry_timestamp_seconds{path}: our own textfile metric
 *   (cloud-init/scripts/pgha-certificate-metrics.sh).
 *
 * Every target carries `node`, `region` and `cluster` (cloud-init/monitoring.ts);
 * selectors match `cluster` so a Prometheus that also scrapes another cluster
 * (federation, a shared Grafana source) does not mix them.
 */

export const ALERT_NAMES = {
  noLeader: "PghaNoLeader",
  multipleLeaders: "PghaMultipleLeaders",
  syncStandbyMissing: "PghaSyncStandbyMissing",
  replicationLagHigh: "PghaReplicationLagHigh",
  etcdNoLeader: "PghaEtcdNoLeader",
  etcdMemberDown: "PghaEtcdMemberDown",
  etcdDatabaseNearQuota: "PghaEtcdDatabaseNearQuota",
  certificateExpiring: "PghaCertificateExpiring",
  diskFilling: "PghaDiskFilling",
  writerBackendDown: "PghaWriterBackendDown",
  targetDown: "PghaTargetDown",
} as const;

export type AlertName = (typeof ALERT_NAMES)[keyof typeof ALERT_NAMES];

/** page: someone acts now (writes or their durability are at risk); ticket: within working hours. */
export type AlertSeverity = "page" | "ticket";

export interface AlertingRule {
  alert: AlertName;
  expr: string;
  /** A Prometheus duration in whole seconds, e.g. "30s". */
  for: string;
  labels: { severity: AlertSeverity; cluster: string };
  /** Go templates that reference `$labels` only (tests/render/alert-rules.test.ts expands them to compare). */
  annotations: { summary: string; description: string };
}

export interface PrometheusRuleGroup {
  name: string;
  /** Evaluation interval of the group: the scrape interval, so the `for` bounds in docs/monitoring.md hold. */
  interval: string;
  rules: AlertingRule[];
}

export interface PrometheusRuleFile {
  groups: PrometheusRuleGroup[];
}

export const ALERT_GROUP = "pgha";

/** Filesystems that are not disks: their "free space" says nothing about a node filling up. */
export const NON_DISK_FSTYPES = ["tmpfs", "overlay", "squashfs", "ramfs", "devtmpfs"] as const;

/** Below this fraction available, a filesystem is reported at once. */
export const DISK_AVAILABLE_MIN_FRACTION = 0.15;
/** A filesystem that the last hour's trend fills within this many hours is reported too… */
export const DISK_FILL_HORIZON_HOURS = 6;
const DISK_FILL_LOOKBACK = "1h";
/**
 * …but only once it is below this fraction available: a burst (a base backup,
 * a bulk load) on a mostly empty volume extrapolates to "full" and is no problem.
 */
export const DISK_FILL_PREDICTION_BELOW_FRACTION = 0.4;

/**
 * Leaf certificates are re-issued by `pulumi up` in their last 30 days
 * (LEAF_EARLY_RENEWAL_HOURS). Fewer than 21 days left means that for 9 days
 * no `pulumi up` (or no rollout of its files) has happened.
 */
export const CERTIFICATE_EXPIRY_WARNING_DAYS = 21;

/** Above this fraction of etcd's backend quota, etcd is near raising NOSPACE and refusing every write (Patroni's leader key too). */
export const ETCD_QUOTA_WARNING_FRACTION = 0.8;

/** Durations, in multiples of the scrape (= evaluation) interval. */
const FOR_INTERVALS = {
  /** Two evaluations: one missed scrape (a slow reply, a Prometheus restart) is not an outage. */
  confirmed: 2,
  /** Conditions that are bad only when they last (lag, a down target, a filling disk). */
  sustained: 4,
} as const;

function seconds(value: number): string {
  return `${value}s`;
}

/** A label matcher's value: equal to a string, not equal (`!=`), or matching (`=~`) / not matching (`!~`) a regular expression. */
export type LabelMatch = string | { not: string } | { matches: string } | { notMatches: string };

/** `metric{job="…",cluster="…",<extra>}`: every selector names its job and cluster. */
export function selector(metric: string, job: LabelMatch, cluster: string, extra: Record<string, LabelMatch> = {}): string {
  const matchers = Object.entries({ job, cluster, ...extra }).map(([name, value]) => {
    if (typeof value === "string") return `${name}=${JSON.stringify(value)}`;
    if ("not" in value) return `${name}!=${JSON.stringify(value.not)}`;
    if ("matches" in value) return `${name}=~${JSON.stringify(value.matches)}`;
    return `${name}!~${JSON.stringify(value.notMatches)}`;
  });
  return `${metric}{${matchers.join(",")}}`;
}

/**
 * Each replica's lag in bytes, as Patroni measures it (ha.py `is_lagging`,
 * postgresql `_wal_position`): the primary's WAL position minus the replica's
 * max(received, replayed). The primary reports 0 for both, so it is left out
 * by `unless`; a stopped replica reports 0 too and so shows the whole WAL
 * position, which is right: it cannot be promoted. `replicaMatch` narrows the
 * replicas (the dashboard's region), never the primary.
 */
export function replicationLagBytes(cluster: string, replicaMatch: Record<string, LabelMatch> = {}): string {
  const positions = selector("", "patroni", cluster, { ...replicaMatch, __name__: { matches: "patroni_xlog_received_location|patroni_xlog_replayed_location" } });
  return [
    `max by (cluster) (${selector("patroni_xlog_location", "patroni", cluster)})`,
    // `group_right ()`: without the empty list the parser would read the next parenthesis as the list.
    "- on (cluster) group_right ()",
    `(max by (cluster, instance, node, region) (${positions}) unless on (instance) (${selector("patroni_primary", "patroni", cluster)} == 1))`,
  ].join(" ");
}

/** The HAProxy backend that sends writes to the primary (its check is Patroni's /primary). */
export function writerBackend(plan: ClusterPlan): string {
  const writer = haproxyListeners(plan).find((listener) => listener.check === "/primary");
  if (!writer) throw new Error("internal: no HAProxy listener checks /primary");
  return writer.name;
}

export function alertRules(plan: ClusterPlan): PrometheusRuleFile {
  const cluster = plan.config.patroni.scope;
  const { maximumLagOnFailover, synchronousMode, synchronousNodeCount } = plan.config.patroni;
  const interval = plan.config.monitoring.scrapeIntervalSeconds;
  const confirmed = seconds(FOR_INTERVALS.confirmed * interval);
  const sustained = seconds(FOR_INTERVALS.sustained * interval);
  if (CERTIFICATE_EXPIRY_WARNING_DAYS * 24 >= LEAF_EARLY_RENEWAL_HOURS) {
    throw new Error("internal: the certificate warning must come after pulumi up's renewal window opens");
  }

  const patroni = (metric: string): string => selector(metric, "patroni", cluster);
  const etcd = (metric: string): string => selector(metric, "etcd", cluster);
  const diskFs = { fstype: { notMatches: NON_DISK_FSTYPES.join("|") } };
  const available = `(${selector("node_filesystem_avail_bytes", "node", cluster, diskFs)} / ${selector("node_filesystem_size_bytes", "node", cluster, diskFs)})`;
  const onNode = "{{ $labels.node }} ({{ $labels.region }})";

  const rules: AlertingRule[] = [
    {
      alert: ALERT_NAMES.noLeader,
      // `or vector(0)`: when the primary's target is gone its series vanish, and count() of nothing is no result, not 0.
      expr: `(count(${patroni("patroni_primary")} == 1) or vector(0)) == 0`,
      for: confirmed,
      labels: { severity: "page", cluster },
      annotations: {
        summary: `No PostgreSQL primary in ${cluster}`,
        description: `No Patroni member of ${cluster} reports patroni_primary = 1 (or the primary's Patroni cannot be scraped): writes through HAProxy fail.`,
      },
    },
    {
      alert: ALERT_NAMES.multipleLeaders,
      // One alert per primary, so each names its node. One interval of `for`: targets are scraped at different offsets,
      // so during a failover the old primary's last sample (before it demoted) can still be its latest when the new
      // primary's first one arrives; one interval later both have been scraped again.
      expr: `${patroni("patroni_primary")} == 1 and on (cluster) (count by (cluster) (${patroni("patroni_primary")} == 1) > 1)`,
      for: seconds(interval),
      labels: { severity: "page", cluster },
      annotations: {
        summary: `${onNode} is one of several PostgreSQL primaries in ${cluster}`,
        description: `${onNode} reports patroni_primary = 1 while another member does too: a split brain; writes may be going to both.`,
      },
    },
    {
      alert: ALERT_NAMES.replicationLagHigh,
      expr: `${replicationLagBytes(cluster)} > ${maximumLagOnFailover}`,
      for: sustained,
      labels: { severity: "ticket", cluster },
      annotations: {
        summary: `Replica ${onNode} lags more than ${maximumLagOnFailover} bytes behind the primary`,
        description: `${onNode} is more than maximum_lag_on_failover (${maximumLagOnFailover} bytes) behind the primary's WAL: Patroni will not promote it.`,
      },
    },
    {
      alert: ALERT_NAMES.etcdNoLeader,
      expr: `${etcd("etcd_server_has_leader")} == 0`,
      for: confirmed,
      labels: { severity: "page", cluster },
      annotations: {
        summary: `etcd member on ${onNode} has no leader`,
        description: `The etcd member on ${onNode} sees no Raft leader: Patroni there cannot renew or take the leader lock, and a primary that cannot reach a quorum demotes itself after ttl.`,
      },
    },
    {
      alert: ALERT_NAMES.etcdMemberDown,
      expr: `${etcd("up")} == 0`,
      for: sustained,
      labels: { severity: "ticket", cluster },
      annotations: {
        summary: `etcd member on ${onNode} cannot be scraped`,
        description: `The etcd member on ${onNode} does not answer on its metrics port: the cluster keeps quorum with the other members, one more loss stops it.`,
      },
    },
    {
      alert: ALERT_NAMES.etcdDatabaseNearQuota,
      // The quota as etcd reports it (etcd_server_quota_backend_bytes), which is the rendered --quota-backend-bytes.
      expr: `${etcd("etcd_mvcc_db_total_size_in_bytes")} / ${etcd("etcd_server_quota_backend_bytes")} > ${ETCD_QUOTA_WARNING_FRACTION}`,
      for: sustained,
      labels: { severity: "ticket", cluster },
      annotations: {
        summary: `etcd database on ${onNode} is above ${ETCD_QUOTA_WARNING_FRACTION * 100} % of its quota`,
        description: `etcd's backend on ${onNode} uses more than ${ETCD_QUOTA_WARNING_FRACTION * 100} % of quota-backend-bytes: at 100 % etcd raises NOSPACE and refuses writes, Patroni's leader key included. Compact and defragment.`,
      },
    },
    {
      alert: ALERT_NAMES.certificateExpiring,
      expr: `${selector("pgha_certificate_expiry_timestamp_seconds", "node", cluster)} - time() < ${CERTIFICATE_EXPIRY_WARNING_DAYS * 86400}`,
      for: confirmed,
      labels: { severity: "ticket", cluster },
      annotations: {
        summary: `Certificate {{ $labels.path }} on ${onNode} expires within ${CERTIFICATE_EXPIRY_WARNING_DAYS} days`,
        description: `{{ $labels.path }} on ${onNode} expires in under ${CERTIFICATE_EXPIRY_WARNING_DAYS} days; pulumi up re-issues leaf certificates in their last ${LEAF_EARLY_RENEWAL_HOURS / 24} days, so it has not run (or its files were not rolled out) since.`,
      },
    },
    {
      alert: ALERT_NAMES.diskFilling,
      // A read-only filesystem cannot fill: the lab's first run fired on the host disk that the NoCloud seed is bound
      // read-only from, as a machine's node_exporter sees it (and EC2's would on an ISO or a squashfs snap).
      expr: [
        `((${available} < ${DISK_AVAILABLE_MIN_FRACTION}`,
        "or",
        `(${available} < ${DISK_FILL_PREDICTION_BELOW_FRACTION}`,
        `and predict_linear(${selector("node_filesystem_avail_bytes", "node", cluster, diskFs)}[${DISK_FILL_LOOKBACK}], ${DISK_FILL_HORIZON_HOURS * 3600}) < 0))`,
        `unless on (instance, mountpoint) ${selector("node_filesystem_readonly", "node", cluster, diskFs)} == 1)`,
      ].join(" "),
      for: sustained,
      labels: { severity: "ticket", cluster },
      annotations: {
        summary: `{{ $labels.mountpoint }} on ${onNode} is filling up`,
        description: `{{ $labels.mountpoint }} on ${onNode} has under ${DISK_AVAILABLE_MIN_FRACTION * 100} % available, or under ${DISK_FILL_PREDICTION_BELOW_FRACTION * 100} % and the last ${DISK_FILL_LOOKBACK} fills it within ${DISK_FILL_HORIZON_HOURS} h.`,
      },
    },
    {
      alert: ALERT_NAMES.writerBackendDown,
      expr: `${selector("haproxy_backend_active_servers", "haproxy", cluster, { proxy: writerBackend(plan) })} == 0`,
      for: confirmed,
      labels: { severity: "page", cluster },
      annotations: {
        summary: `HAProxy on ${onNode} has no server for writes`,
        description: `HAProxy on ${onNode} sees no member answering /primary: connections to its primary port fail.`,
      },
    },
    {
      alert: ALERT_NAMES.targetDown,
      // etcd's targets have PghaEtcdMemberDown.
      expr: `${selector("up", { not: "etcd" }, cluster)} == 0`,
      for: sustained,
      labels: { severity: "ticket", cluster },
      annotations: {
        summary: `{{ $labels.job }} on ${onNode} cannot be scraped`,
        description: `Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}) on ${onNode}: the service or the node is down, or its metrics certificate is refused.`,
      },
    },
  ];
  if (synchronousMode) {
    rules.splice(2, 0, {
      alert: ALERT_NAMES.syncStandbyMissing,
      // Per primary, so it names the node: a primary with fewer synchronous standbys than synchronous_node_count.
      // With synchronous_mode_strict off Patroni then lets commits go ahead unreplicated.
      expr: `${patroni("patroni_primary")} == 1 unless on (cluster) (count by (cluster) (${patroni("patroni_sync_standby")} == 1) >= ${synchronousNodeCount})`,
      for: confirmed,
      labels: { severity: "page", cluster },
      annotations: {
        summary: `Primary ${onNode} has fewer than ${synchronousNodeCount} synchronous standby`,
        description: `No member reports patroni_sync_standby = 1 beside primary ${onNode} (synchronous_node_count ${synchronousNodeCount}): commits are acknowledged without a second copy, and a failover now can lose them.`,
      },
    });
  }
  return { groups: [{ name: ALERT_GROUP, interval: seconds(interval), rules }] };
}

export function renderAlertRules(plan: ClusterPlan): string {
  return dumpYaml(alertRules(plan));
}
