import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildClusterPlan, type ClusterPlan } from "../plan";
import {
  CERTIFICATE_EXPIRY_WARNING_DAYS,
  DISK_AVAILABLE_MIN_FRACTION,
  ETCD_QUOTA_WARNING_FRACTION,
  NON_DISK_FSTYPES,
  replicationLagBytes,
  selector,
  writerBackend,
  type LabelMatch,
} from "./alert-rules";
import { haproxyListeners } from "./haproxy";
import { scrapeJobs } from "./monitoring";

/**
 * The cluster's Grafana dashboard (docs/monitoring.md "Dashboards"): one JSON
 * model per plan, imported into any Grafana with a Prometheus data source
 * that reads a region's Prometheus. Metric names are the exporters' own, as
 * cloud-init/alert-rules.ts lists where they were checked; the panels add
 * postgres_exporter v0.17.1's pg_stat_database_xact_commit and
 * pg_stat_database_numbackends (collector/pg_stat_database.go) and
 * pg_settings_max_connections (cmd/postgres_exporter/pg_setting.go), HAProxy
 * 3.0's haproxy_backend_current_sessions (ST_I_PX_SCUR), etcd v3.5.16's
 * etcd_network_peer_round_trip_time_seconds (rafthttp/metrics.go, label `To`:
 * the peer's member id) and node_exporter v1.9.0's node_cpu_seconds_total and
 * node_memory_{MemAvailable,MemTotal}_bytes.
 *
 * Every query returns a series in a healthy cluster (the lab runs each one
 * against its Prometheus, `dashboardQueries`): values are shown as they are
 * (a role of 0 or 1, not `== 1`), so nothing is empty while all is well.
 */

/** Where the dashboard of the default plan is committed, relative to the repository root. */
export const DASHBOARD_FILE = "docs/dashboards/pgha-cluster.json";

export interface DatasourceRef {
  type: "prometheus";
  uid: string;
}

export interface PanelTarget {
  refId: string;
  expr: string;
  legendFormat: string;
  datasource: DatasourceRef;
  /** The query's minimum step ("Min interval"): its job's scrape interval, so `$__rate_interval` is at least 4 × it. */
  interval: string;
}

export interface Threshold {
  color: string;
  /** null: the base step, below every value. */
  value: number | null;
}

export interface ValueMapping {
  type: "value";
  options: Record<string, { text: string; color: string; index: number }>;
}

export interface FieldDefaults {
  unit: string;
  min?: number;
  decimals?: number;
  mappings: ValueMapping[];
  thresholds: { mode: "absolute"; steps: Threshold[] };
  color: { mode: "thresholds" | "palette-classic" };
  custom?: { thresholdsStyle: { mode: "line" | "off" } };
}

export interface StatOptions {
  reduceOptions: { calcs: ["lastNotNull"]; fields: ""; values: false };
  colorMode: "background";
  graphMode: "none";
  textMode: "value_and_name";
  justifyMode: "auto";
  orientation: "auto";
}

export interface TimeseriesOptions {
  legend: { displayMode: "list"; placement: "bottom"; showLegend: true; calcs: [] };
  tooltip: { mode: "multi"; sort: "desc" };
}

interface PanelBase {
  id: number;
  title: string;
  description: string;
  datasource: DatasourceRef;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: PanelTarget[];
  fieldConfig: { defaults: FieldDefaults; overrides: [] };
}

export type GrafanaPanel = (PanelBase & { type: "stat"; options: StatOptions }) | (PanelBase & { type: "timeseries"; options: TimeseriesOptions });

export interface DatasourceVariable {
  type: "datasource";
  name: "datasource";
  label: string;
  query: "prometheus";
  hide: 0;
  current: Record<string, never>;
}

export interface VariableOption {
  selected: boolean;
  text: string;
  value: string;
}

export interface CustomVariable {
  type: "custom";
  name: string;
  label: string;
  /** The options, comma separated. */
  query: string;
  multi: true;
  includeAll: true;
  /** What "All" stands for in a query: any value. */
  allValue: string;
  hide: 0;
  current: { selected: true; text: string[]; value: string[] };
  options: VariableOption[];
}

export interface GrafanaDashboard {
  uid: string;
  title: string;
  description: string;
  tags: string[];
  timezone: "utc";
  schemaVersion: 39;
  version: 1;
  editable: true;
  /** Shared crosshair across panels. */
  graphTooltip: 1;
  refresh: string;
  time: { from: string; to: string };
  annotations: { list: [] };
  links: [];
  templating: { list: (DatasourceVariable | CustomVariable)[] };
  panels: GrafanaPanel[];
}

const DATASOURCE: DatasourceRef = { type: "prometheus", uid: "${datasource}" };
const REGION_VARIABLE = "region";
const RATE_INTERVAL = "$__rate_interval";
const GRID_COLUMNS = 24;
const PANEL_HEIGHT = 8;

/**
 * etcd observes a peer's round-trip time every 30 s while the peer is healthy
 * (statusMonitoringInterval, rafthttp/probing_status.go), so a window of the
 * usual 4 scrape intervals often holds no observation: this one holds four.
 */
const ETCD_RTT_WINDOW = "2m";

const GREEN = "green";
const RED = "red";
const BLUE = "blue";

interface PanelSpec {
  type: GrafanaPanel["type"];
  title: string;
  description: string;
  /** Grid columns (of 24). */
  width: number;
  unit: string;
  targets: { expr: string; legend: string }[];
  thresholds?: Threshold[];
  /** Draw the thresholds as lines (time series). */
  thresholdLines?: boolean;
  mappings?: ValueMapping["options"];
  min?: number;
  decimals?: number;
}

/** A stat of a 0/1 metric per node, each value shown by name in its colour. */
function twoStateStat(title: string, description: string, expr: string, zero: { text: string; color: string }, one: { text: string; color: string }): PanelSpec {
  return { type: "stat", title, description, width: 8, unit: "none", targets: [{ expr, legend: "{{node}}" }], mappings: { "0": { ...zero, index: 0 }, "1": { ...one, index: 1 } } };
}

function panelSpecs(plan: ClusterPlan): PanelSpec[] {
  const cluster = plan.config.patroni.scope;
  const region: Record<string, LabelMatch> = { region: { matches: `$${REGION_VARIABLE}` } };
  const on = (metric: string, job: string, extra: Record<string, LabelMatch> = {}): string => selector(metric, job, cluster, { ...region, ...extra });
  const diskFs = { fstype: { notMatches: NON_DISK_FSTYPES.join("|") } };
  const backends = haproxyListeners(plan).map((listener) => listener.name);
  const writer = writerBackend(plan);
  const { maximumLagOnFailover } = plan.config.patroni;
  return [
    twoStateStat(
      "Patroni: role per member",
      "patroni_primary: 1 where PostgreSQL runs as the primary. Exactly one member should show primary.",
      on("patroni_primary", "patroni"),
      { text: "replica", color: BLUE },
      { text: "primary", color: GREEN },
    ),
    twoStateStat(
      "Patroni: synchronous standby",
      `patroni_sync_standby: 1 on the synchronous standby (synchronous_node_count ${plan.config.patroni.synchronousNodeCount}).`,
      on("patroni_sync_standby", "patroni"),
      { text: "not sync", color: BLUE },
      { text: "sync", color: GREEN },
    ),
    {
      type: "stat",
      title: `HAProxy: ${writer} active servers`,
      description: `haproxy_backend_active_servers of the writer backend on each HAProxy: 1 is right (the member answering /primary), 0 means writes fail there.`,
      width: 8,
      unit: "none",
      targets: [{ expr: on("haproxy_backend_active_servers", "haproxy", { proxy: writer }), legend: "{{node}}" }],
      thresholds: [
        { color: RED, value: null },
        { color: GREEN, value: 1 },
        { color: RED, value: 2 },
      ],
    },
    {
      type: "timeseries",
      title: "Replication lag (bytes behind the primary)",
      description: `Each replica's lag as Patroni measures it: the primary's WAL position minus the replica's received/replayed position. Above the line (maximum_lag_on_failover, ${maximumLagOnFailover} bytes) Patroni does not promote it.`,
      width: 12,
      unit: "bytes",
      targets: [{ expr: replicationLagBytes(cluster, region), legend: "{{node}}" }],
      thresholds: [
        { color: GREEN, value: null },
        { color: RED, value: maximumLagOnFailover },
      ],
      thresholdLines: true,
      min: 0,
    },
    {
      type: "timeseries",
      title: "PostgreSQL: commits per second",
      description: "rate of pg_stat_database_xact_commit over every database (postgres_exporter); replicas count their read-only transactions.",
      width: 12,
      unit: "ops",
      targets: [{ expr: `sum by (node, region) (rate(${on("pg_stat_database_xact_commit", "postgres")}[${RATE_INTERVAL}]))`, legend: "{{node}}" }],
      min: 0,
    },
    {
      type: "timeseries",
      title: "PostgreSQL: connections and max_connections",
      description: "Backends connected to any database (pg_stat_database_numbackends, summed) against the server's max_connections.",
      width: 12,
      unit: "short",
      targets: [
        { expr: `sum by (node, region) (${on("pg_stat_database_numbackends", "postgres")})`, legend: "{{node}} connections" },
        { expr: `max by (node, region) (${on("pg_settings_max_connections", "postgres")})`, legend: "{{node}} max_connections" },
      ],
      min: 0,
    },
    {
      type: "timeseries",
      title: "HAProxy: current sessions per backend",
      description: "haproxy_backend_current_sessions of the PostgreSQL backends on each HAProxy.",
      width: 12,
      unit: "short",
      targets: [{ expr: `sum by (node, proxy) (${on("haproxy_backend_current_sessions", "haproxy", { proxy: { matches: backends.join("|") } })})`, legend: "{{node}} {{proxy}}" }],
      min: 0,
    },
    twoStateStat(
      "etcd: member has a leader",
      "etcd_server_has_leader on each member: 0 means the member sees no Raft leader.",
      on("etcd_server_has_leader", "etcd"),
      { text: "no leader", color: RED },
      { text: "leader", color: GREEN },
    ),
    {
      type: "timeseries",
      title: "etcd: leader changes in the last hour",
      description: "increase of etcd_server_leader_changes_seen_total over one hour, per member.",
      width: 8,
      unit: "short",
      targets: [{ expr: `increase(${on("etcd_server_leader_changes_seen_total", "etcd")}[1h])`, legend: "{{node}}" }],
      min: 0,
    },
    {
      type: "timeseries",
      title: "etcd: database size and quota",
      description: `etcd_mvcc_db_total_size_in_bytes against etcd_server_quota_backend_bytes; PghaEtcdDatabaseNearQuota fires above ${ETCD_QUOTA_WARNING_FRACTION * 100} %.`,
      width: 8,
      unit: "bytes",
      targets: [
        { expr: on("etcd_mvcc_db_total_size_in_bytes", "etcd"), legend: "{{node}} size" },
        { expr: `max by (node, region) (${on("etcd_server_quota_backend_bytes", "etcd")})`, legend: "{{node}} quota" },
      ],
      min: 0,
    },
    {
      type: "timeseries",
      title: "etcd: peer round-trip time",
      description: `Mean of etcd_network_peer_round_trip_time_seconds over ${ETCD_RTT_WINDOW}, from each member to each peer (To: the peer's member id).`,
      width: 12,
      unit: "s",
      targets: [
        {
          expr: `rate(${on("etcd_network_peer_round_trip_time_seconds_sum", "etcd")}[${ETCD_RTT_WINDOW}]) / rate(${on("etcd_network_peer_round_trip_time_seconds_count", "etcd")}[${ETCD_RTT_WINDOW}])`,
          legend: "{{node}} → {{To}}",
        },
      ],
      min: 0,
    },
    {
      type: "timeseries",
      title: "Disk available",
      description: `Available fraction of every disk filesystem (node_exporter; ${NON_DISK_FSTYPES.join(", ")} left out). PghaDiskFilling fires below the line.`,
      width: 12,
      unit: "percentunit",
      targets: [
        {
          expr: `${on("node_filesystem_avail_bytes", "node", diskFs)} / ${on("node_filesystem_size_bytes", "node", diskFs)}`,
          legend: "{{node}} {{mountpoint}}",
        },
      ],
      thresholds: [
        { color: RED, value: null },
        { color: GREEN, value: DISK_AVAILABLE_MIN_FRACTION },
      ],
      thresholdLines: true,
      min: 0,
    },
    {
      type: "stat",
      title: "Certificates: days left",
      description: `Days until the first certificate under /etc/pgha/tls of each node expires (pgha_certificate_expiry_timestamp_seconds). Red below ${CERTIFICATE_EXPIRY_WARNING_DAYS} days.`,
      width: 12,
      unit: "d",
      decimals: 0,
      targets: [{ expr: `min by (node, region) (${on("pgha_certificate_expiry_timestamp_seconds", "node")} - time()) / 86400`, legend: "{{node}}" }],
      thresholds: [
        { color: RED, value: null },
        { color: GREEN, value: CERTIFICATE_EXPIRY_WARNING_DAYS },
      ],
    },
    {
      type: "timeseries",
      title: "CPU busy",
      description: "Fraction of CPU time not idle, averaged over each node's CPUs (node_cpu_seconds_total).",
      width: 12,
      unit: "percentunit",
      targets: [{ expr: `1 - avg by (node, region) (rate(${on("node_cpu_seconds_total", "node", { mode: "idle" })}[${RATE_INTERVAL}]))`, legend: "{{node}}" }],
      min: 0,
    },
    {
      type: "timeseries",
      title: "Memory used",
      description: "1 − MemAvailable / MemTotal on each node.",
      width: 12,
      unit: "percentunit",
      targets: [{ expr: `1 - ${on("node_memory_MemAvailable_bytes", "node")} / ${on("node_memory_MemTotal_bytes", "node")}`, legend: "{{node}}" }],
      min: 0,
    },
    {
      type: "stat",
      title: "Scrape targets up, per job",
      description: "How many targets of each job answer; PghaTargetDown and PghaEtcdMemberDown name the ones that do not.",
      width: 12,
      unit: "none",
      targets: [{ expr: `sum by (job) (${selector("up", { matches: ".+" }, cluster, region)})`, legend: "{{job}}" }],
      thresholds: [{ color: GREEN, value: null }],
    },
  ];
}

/**
 * A query's minimum step: the scrape interval of the slowest job it reads. node_exporter is scraped less often than
 * the plan's interval (cloud-init/monitoring.ts), and a rate window of 4 × the plan's 2 s (the lab) held no two of its
 * samples: the lab's "CPU busy" panel came back empty.
 */
function queryInterval(plan: ClusterPlan, expr: string): string {
  const jobs = scrapeJobs(plan);
  const named = [...expr.matchAll(/job="([^"]+)"/g)].map((match) => match[1]);
  const read = named.length ? jobs.filter((job) => named.includes(job.job)) : jobs;
  return `${Math.max(...read.map((job) => job.intervalSeconds ?? plan.config.monitoring.scrapeIntervalSeconds))}s`;
}

function panel(spec: PanelSpec, id: number, gridPos: GrafanaPanel["gridPos"], intervalOf: (expr: string) => string): GrafanaPanel {
  const base: PanelBase = {
    id,
    title: spec.title,
    description: spec.description,
    datasource: DATASOURCE,
    gridPos,
    targets: spec.targets.map((target, index) => ({
      refId: String.fromCharCode(65 + index),
      expr: target.expr,
      legendFormat: target.legend,
      datasource: DATASOURCE,
      interval: intervalOf(target.expr),
    })),
    fieldConfig: {
      defaults: {
        unit: spec.unit,
        ...(spec.min === undefined ? {} : { min: spec.min }),
        ...(spec.decimals === undefined ? {} : { decimals: spec.decimals }),
        mappings: spec.mappings ? [{ type: "value", options: spec.mappings }] : [],
        thresholds: { mode: "absolute", steps: spec.thresholds ?? [{ color: GREEN, value: null }] },
        // Stats colour by their mapping or threshold; time series by series, with the thresholds as lines where given.
        color: { mode: spec.type === "stat" ? "thresholds" : "palette-classic" },
        ...(spec.type === "timeseries" ? { custom: { thresholdsStyle: { mode: spec.thresholdLines ? "line" : "off" } } } : {}),
      },
      overrides: [],
    },
  };
  if (spec.type === "stat") {
    return {
      ...base,
      type: "stat",
      options: {
        reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
        colorMode: "background",
        graphMode: "none",
        textMode: "value_and_name",
        justifyMode: "auto",
        orientation: "auto",
      },
    };
  }
  return {
    ...base,
    type: "timeseries",
    options: { legend: { displayMode: "list", placement: "bottom", showLegend: true, calcs: [] }, tooltip: { mode: "multi", sort: "desc" } },
  };
}

export function grafanaDashboard(plan: ClusterPlan): GrafanaDashboard {
  const cluster = plan.config.patroni.scope;
  const interval = plan.config.monitoring.scrapeIntervalSeconds;
  // Left to right, a new row when the next panel does not fit.
  let x = 0;
  let y = 0;
  const panels = panelSpecs(plan).map((spec, index) => {
    if (x + spec.width > GRID_COLUMNS) {
      x = 0;
      y += PANEL_HEIGHT;
    }
    const placed = panel(spec, index + 1, { x, y, w: spec.width, h: PANEL_HEIGHT }, (expr) => queryInterval(plan, expr));
    x += spec.width;
    return placed;
  });
  const regions = plan.regions.map((region) => region.name);
  return {
    // Grafana's uid is at most 40 characters; the scope is at most 40 too, so cut.
    uid: `pgha-${cluster}`.slice(0, 40),
    title: `pgha: ${cluster}`,
    description: `PostgreSQL, Patroni, etcd and HAProxy of ${cluster} across ${regions.join(", ")} (generated by cloud-init/dashboard.ts; docs/monitoring.md).`,
    tags: ["pgha", "postgresql", "patroni", "etcd", "haproxy"],
    timezone: "utc",
    schemaVersion: 39,
    version: 1,
    editable: true,
    graphTooltip: 1,
    // No faster than Grafana's default minimum refresh (5 s); no point refreshing faster than two scrapes.
    refresh: `${Math.max(5, 2 * interval)}s`,
    time: { from: "now-1h", to: "now" },
    annotations: { list: [] },
    links: [],
    templating: {
      list: [
        { type: "datasource", name: "datasource", label: "Data source", query: "prometheus", hide: 0, current: {} },
        {
          type: "custom",
          name: REGION_VARIABLE,
          label: "Region",
          query: regions.join(","),
          multi: true,
          includeAll: true,
          allValue: ".+",
          hide: 0,
          current: { selected: true, text: ["All"], value: ["$__all"] },
          options: [{ selected: true, text: "All", value: "$__all" }, ...regions.map((name) => ({ selected: false, text: name, value: name }))],
        },
      ],
    },
    panels,
  };
}

/**
 * Every panel's queries as Prometheus runs them with every variable at
 * "All" and the finest zoom: `$__rate_interval` is then 4 × the query's
 * minimum step (Grafana: max($__interval + step, 4 × step), $__interval =
 * step). Throws on a variable it does not know, so no query reaches
 * Prometheus half substituted.
 */
export function dashboardQueries(d: GrafanaDashboard): { panel: string; expr: string }[] {
  const allValues = new Map(d.templating.list.flatMap((variable) => (variable.type === "custom" ? [[variable.name, variable.allValue] as const] : [])));
  return d.panels.flatMap((p) =>
    p.targets.map((target) => {
      const step = /^(\d+)s$/.exec(target.interval);
      if (!step) throw new Error(`${p.title}: min interval ${target.interval} is not whole seconds`);
      const expr = target.expr.replaceAll(RATE_INTERVAL, `${4 * Number(step[1])}s`).replace(/\$(\w+)/g, (whole, name: string) => {
        const value = allValues.get(name);
        if (value === undefined) throw new Error(`${p.title}: unknown variable ${whole} in ${target.expr}`);
        return value;
      });
      return { panel: p.title, expr };
    }),
  );
}

/** The repository's Prettier print width (.prettierrc): arrays that fit in it are written on one line, as Prettier would. */
const PRINT_WIDTH = 180;

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/**
 * Two-space JSON in the layout Prettier gives it, so `npm run lint`
 * (prettier --check) accepts the generated file as written: objects one key
 * a line, an array of scalars on one line when that line fits.
 */
function formatJson(value: Json, indent: string, prefix: string, suffix: string): string[] {
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return [`${indent}${prefix}[]${suffix}`];
    if (value.every((item) => item === null || typeof item !== "object")) {
      const line = `${indent}${prefix}[${value.map((item) => JSON.stringify(item)).join(", ")}]${suffix}`;
      if (line.length <= PRINT_WIDTH) return [line];
    }
    return [`${indent}${prefix}[`, ...value.flatMap((item, i) => formatJson(item, inner, "", i < value.length - 1 ? "," : "")), `${indent}]${suffix}`];
  }
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value);
    if (entries.length === 0) return [`${indent}${prefix}{}${suffix}`];
    return [
      `${indent}${prefix}{`,
      ...entries.flatMap(([key, item], i) => formatJson(item, inner, `${JSON.stringify(key)}: `, i < entries.length - 1 ? "," : "")),
      `${indent}}${suffix}`,
    ];
  }
  return [`${indent}${prefix}${JSON.stringify(value)}${suffix}`];
}

/** The file's exact text and a final newline, as tests/unit/dashboard.test.ts compares it. */
export function grafanaDashboardText(plan: ClusterPlan): string {
  // The dashboard is plain data; its JSON round trip is the Json type.
  const data = JSON.parse(JSON.stringify(grafanaDashboard(plan))) as Json;
  return `${formatJson(data, "", "", "").join("\n")}\n`;
}

/** The plan the committed dashboard is rendered from: every default (three regions, scope pg-multiregion, 15 s scrapes). */
export function defaultDashboardPlan(): ClusterPlan {
  return buildClusterPlan({}, { stack: "dev" });
}

if (require.main === module) {
  const file = join(__dirname, "..", DASHBOARD_FILE);
  writeFileSync(file, grafanaDashboardText(defaultDashboardPlan()));
  console.log(`wrote ${DASHBOARD_FILE}`);
}
