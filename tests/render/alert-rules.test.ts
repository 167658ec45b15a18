import assert from "node:assert/strict";
import * as fs from "node:fs";
import { after, describe, test } from "node:test";
import { ALERT_NAMES, alertRules, renderAlertRules, type AlertName } from "../../cloud-init/alert-rules";
import { dashboardQueries, grafanaDashboard } from "../../cloud-init/dashboard";
import { dumpYaml } from "../../cloud-init/yaml";
import { labConfig } from "../../lab/lab";
import { buildClusterPlan, NODE_PATHS, nodesWithRole, PORTS, type ClusterPlan, type NodePlan } from "../../plan";
import { rootfsPath, scratchDir, TestRoot } from "./harness";

/**
 * The alert rules through the real promtool (Prometheus 2.53, the tools
 * rootfs): `promtool check rules` on the rendered file, and `promtool test
 * rules` on cases rendered here, for production's 15 s interval and the
 * lab's 2 s. The input series follow the metrics contract of
 * cloud-init/monitoring.ts (jobs, and the labels node, region, cluster,
 * instance = <node>:<port> on every target) and the exporters' own names and
 * labels (cloud-init/alert-rules.ts says where each was checked).
 *
 * Samples are one scrape interval apart and promtool evaluates at the same
 * instants, so a condition that starts with sample k is seen at evaluation k
 * and fires `for` later, exactly: each firing case asserts both the last
 * quiet evaluation and the first firing one.
 */

const rootfs = rootfsPath();
const base = scratchDir("alert-rules");
after(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

const PLANS: { name: string; plan: ClusterPlan }[] = [
  { name: "production (15 s)", plan: buildClusterPlan({}, { stack: "render" }) },
  { name: "lab (2 s)", plan: buildClusterPlan(labConfig(), { stack: "render" }) },
];

/** Samples per series after the first: every case's evaluations fall inside. */
const STEPS = 24;
/** The sample (and evaluation) at which a case's fault begins. */
const ONSET = 6;

type Sample = number | "stale" | "_";

interface Series {
  metric: string;
  labels: Record<string, string>;
  value: (step: number) => Sample;
}

/** The jobs of the metrics contract, by node role, with their ports. */
function contractTargets(plan: ClusterPlan): { job: string; port: number; node: NodePlan }[] {
  const on = (job: string, port: number, nodes: NodePlan[]) => nodes.map((node) => ({ job, port, node }));
  const databases = nodesWithRole(plan, "postgres");
  const haproxies = nodesWithRole(plan, "haproxy");
  return [
    ...on("patroni", PORTS.patroniRest, databases),
    ...on("postgres", PORTS.postgresExporter, databases),
    ...on("etcd", PORTS.etcdMetrics, nodesWithRole(plan, "etcd")),
    ...on("node", PORTS.nodeExporter, plan.nodes),
    ...on("haproxy", PORTS.haproxyMetrics, haproxies),
    ...on("prometheus", PORTS.prometheus, haproxies),
    ...on("alertmanager", PORTS.alertmanager, haproxies),
  ];
}

/** A healthy cluster's series; cases change some of them from ONSET on. */
class Fixture {
  readonly series: Series[] = [];
  readonly interval: number;
  readonly primary: NodePlan;
  readonly syncStandby: NodePlan;
  readonly asyncReplica: NodePlan;

  constructor(readonly plan: ClusterPlan) {
    this.interval = plan.config.monitoring.scrapeIntervalSeconds;
    const [primary, syncStandby, asyncReplica] = nodesWithRole(plan, "postgres");
    this.primary = primary;
    this.syncStandby = syncStandby;
    this.asyncReplica = asyncReplica;
    const cluster = plan.config.patroni.scope;
    const I = this.interval;
    const members = nodesWithRole(plan, "etcd");
    for (const { job, port, node } of contractTargets(plan)) {
      const target = { job, instance: `${node.name}:${port}`, node: node.name, region: node.region, cluster };
      const add = (metric: string, value: (step: number) => number, extra: Record<string, string> = {}): void =>
        void this.series.push({ metric, labels: { ...target, ...extra }, value });
      add("up", () => 1);
      const isPrimary = node === primary;
      // 1 kB of WAL per interval; the replicas 1 kB (received) and 2 kB (replayed) behind.
      const wal = (step: number): number => 1e9 + 1000 * step;
      if (job === "patroni") {
        // Patroni's own labels (api.py): scope and the member name.
        const patroni = { scope: cluster, name: node.name };
        add("patroni_primary", () => (isPrimary ? 1 : 0), patroni);
        add("patroni_replica", () => (isPrimary ? 0 : 1), patroni);
        add("patroni_sync_standby", () => (node === syncStandby ? 1 : 0), patroni);
        add("patroni_xlog_location", (s) => (isPrimary ? wal(s) : 0), patroni);
        add("patroni_xlog_received_location", (s) => (isPrimary ? 0 : wal(s) - 1000), patroni);
        add("patroni_xlog_replayed_location", (s) => (isPrimary ? 0 : wal(s) - 2000), patroni);
      }
      if (job === "postgres") {
        for (const [datid, datname] of [
          ["1", "template1"],
          ["5", "postgres"],
        ]) {
          add("pg_stat_database_xact_commit", (s) => (isPrimary ? 50 : 5) * I * s, { datid, datname });
          add("pg_stat_database_numbackends", () => 3, { datid, datname });
        }
        add("pg_settings_max_connections", () => 100);
      }
      if (job === "etcd") {
        add("etcd_server_has_leader", () => 1);
        add("etcd_server_leader_changes_seen_total", () => 1);
        add("etcd_mvcc_db_total_size_in_bytes", () => 20 * 1024 * 1024);
        add("etcd_server_quota_backend_bytes", () => plan.config.etcd.quotaBackendBytes);
        // One observation every 30 s per peer (rafthttp's statusMonitoringInterval), 31 ms each.
        for (const peer of members.filter((m) => m.name !== node.name)) {
          const to = members.indexOf(peer).toString(16).padStart(16, "0");
          add("etcd_network_peer_round_trip_time_seconds_count", (s) => (s * I) / 30, { To: to });
          add("etcd_network_peer_round_trip_time_seconds_sum", (s) => ((s * I) / 30) * 0.031, { To: to });
        }
      }
      if (job === "node") {
        const filesystem = (mountpoint: string, device: string, fstype: string, size: number, avail: number, readonly = false): void => {
          add("node_filesystem_size_bytes", () => size, { device, fstype, mountpoint });
          add("node_filesystem_avail_bytes", () => avail, { device, fstype, mountpoint });
          add("node_filesystem_readonly", () => (readonly ? 1 : 0), { device, fstype, mountpoint });
        };
        filesystem("/", "/dev/nvme0n1p1", "ext4", 20e9, 15e9);
        // A full tmpfs must never count as a filling disk.
        filesystem("/run/credentials/systemd-journald.service", "tmpfs", "tmpfs", 1e6, 0);
        // Nor a nearly full read-only mount (in the lab: the host disk the NoCloud seed is bound from).
        filesystem("/var/lib/cloud/seed/nocloud", "/dev/vda", "ext4", 252e9, 5e9, true);
        if (node.roles.has("postgres")) filesystem("/var/lib/postgresql", "/dev/nvme1n1", "ext4", 100e9, 90e9);
        for (const mode of ["idle", "user"]) add("node_cpu_seconds_total", (s) => (mode === "idle" ? 0.9 : 0.1) * I * s, { cpu: "0", mode });
        add("node_memory_MemAvailable_bytes", () => 4e9);
        add("node_memory_MemTotal_bytes", () => 8e9);
        // promtool's clock starts at 0: an expiry is seconds from then. Two years, as pulumi up issues them.
        for (const path of [NODE_PATHS.caCert, ...plan.certificates.filter((c) => c.node === node.name).map((c) => c.certPath)]) {
          add("pgha_certificate_expiry_timestamp_seconds", () => 730 * 86400, { path });
        }
      }
      if (job === "haproxy") {
        for (const [proxy, servers] of [
          ["pg_primary", 1],
          ["pg_replicas", 2],
          ["pg_sync_replicas", 1],
        ] as const) {
          add("haproxy_backend_active_servers", () => servers, { proxy });
          add("haproxy_backend_current_sessions", () => 5, { proxy });
        }
      }
    }
  }

  /** The series of a metric on a node (narrowed by extra labels); at least one must exist. */
  find(metric: string, node: NodePlan | string, match: Record<string, string> = {}): Series[] {
    const name = typeof node === "string" ? node : node.name;
    const found = this.series.filter((s) => s.metric === metric && s.labels.node === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
    assert.ok(found.length > 0, `fixture has no ${metric} on ${name} ${JSON.stringify(match)}`);
    return found;
  }

  /** From `from` on (ONSET unless given) the series take `value` (given the step and the healthy value). */
  change(
    metric: string,
    node: NodePlan | string,
    value: (step: number, healthy: Sample) => Sample,
    options: { match?: Record<string, string>; from?: number; until?: number } = {},
  ): this {
    const from = options.from ?? ONSET;
    const until = options.until ?? Infinity;
    for (const s of this.find(metric, node, options.match)) {
      const healthy = s.value;
      s.value = (step) => (step >= from && step < until ? value(step, healthy(step)) : healthy(step));
    }
    return this;
  }

  /** A target that stops answering: its series go stale, `up` turns 0. */
  targetDown(job: string, node: NodePlan | string, options: { from?: number; until?: number } = {}): this {
    const name = typeof node === "string" ? node : node.name;
    const from = options.from ?? ONSET;
    for (const s of this.series.filter((candidate) => candidate.labels.job === job && candidate.labels.node === name && candidate.metric !== "up")) {
      const healthy = s.value;
      s.value = (step) => (step === from ? "stale" : step > from && step < (options.until ?? Infinity) ? "_" : healthy(step));
    }
    return this.change("up", node, () => 0, { match: { job }, ...options });
  }

  labelsOf(metric: string, node: NodePlan | string, match: Record<string, string> = {}): Record<string, string> {
    const [first] = this.find(metric, node, match);
    return first.labels;
  }

  /** promtool's input_series. */
  input(): { series: string; values: string }[] {
    return this.series.map((s) => ({
      series: `${s.metric}{${Object.entries(s.labels)
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(",")}}`,
      values: Array.from({ length: STEPS + 1 }, (_, step) => String(s.value(step))).join(" "),
    }));
  }
}

/** An expected alert: the labels of the series it is about (none for a cluster-wide alert). */
type Expected = Record<string, string>;

interface AlertCase {
  title: string;
  fault: (fixture: Fixture) => void;
  /** At these evaluations (steps), these alerts with these series labels, and no others of the same name. */
  expect: { step: number; alert: AlertName; firing: Expected[] }[];
}

/** For how many intervals the rendered rule waits. */
function forSteps(plan: ClusterPlan, alert: AlertName): number {
  const rule = alertRules(plan).groups[0].rules.find((r) => r.alert === alert);
  assert.ok(rule, `no rule ${alert}`);
  return Number(rule.for.replace(/s$/, "")) / plan.config.monitoring.scrapeIntervalSeconds;
}

/** Quiet at onset + for − 1, firing at onset + for (and still at the last sample). */
function firesAfterFor(plan: ClusterPlan, alert: AlertName, firing: Expected[], onset = ONSET): AlertCase["expect"] {
  const wait = forSteps(plan, alert);
  return [
    { step: onset + wait - 1, alert, firing: [] },
    { step: onset + wait, alert, firing },
    { step: STEPS, alert, firing },
  ];
}

/** Quiet at every evaluation from onset to the end. */
function quietThroughout(alert: AlertName, onset = ONSET): AlertCase["expect"] {
  return Array.from({ length: STEPS - onset + 1 }, (_, i) => ({ step: onset + i, alert, firing: [] }));
}

function alertCases(plan: ClusterPlan): AlertCase[] {
  const probe = new Fixture(plan);
  const { primary, syncStandby, asyncReplica } = probe;
  const etcdOn = (node: NodePlan) => probe.labelsOf("etcd_server_has_leader", node);
  const target = (job: string, node: NodePlan | string) => probe.labelsOf("up", node, { job });
  const primaryLabels = (node: NodePlan) => probe.labelsOf("patroni_primary", node);
  const { maximumLagOnFailover } = plan.config.patroni;
  const quota = plan.config.etcd.quotaBackendBytes;
  const haproxy = nodesWithRole(plan, "haproxy");
  const I = probe.interval;
  const dataVolume = { mountpoint: "/var/lib/postgresql" };
  const volumeLabels = probe.labelsOf("node_filesystem_avail_bytes", syncStandby, dataVolume);
  const lagged = (lag: number) => (f: Fixture) => {
    for (const metric of ["patroni_xlog_received_location", "patroni_xlog_replayed_location"]) {
      f.change(metric, asyncReplica, (step) => 1e9 + 1000 * step - lag);
    }
  };
  const lagLabels = (node: NodePlan) => {
    const { instance, region, cluster } = target("patroni", node);
    return { instance, node: node.name, region, cluster };
  };

  return [
    {
      title: "a healthy cluster raises nothing",
      fault: () => undefined,
      expect: Object.values(ALERT_NAMES).flatMap((alert) => [0, ONSET, STEPS].map((step) => ({ step, alert, firing: [] }))),
    },
    {
      title: "the primary's Patroni target disappears",
      fault: (f) => f.targetDown("patroni", primary),
      expect: [
        ...firesAfterFor(plan, ALERT_NAMES.noLeader, [{}]),
        ...firesAfterFor(plan, ALERT_NAMES.targetDown, [target("patroni", primary)]),
        ...quietThroughout(ALERT_NAMES.syncStandbyMissing),
      ],
    },
    {
      title: "the primary demotes and no member is promoted",
      fault: (f) => f.change("patroni_primary", primary, () => 0),
      expect: firesAfterFor(plan, ALERT_NAMES.noLeader, [{}]),
    },
    {
      title: "a switchover: one interval without a primary",
      fault: (f) => {
        f.change("patroni_primary", primary, () => 0);
        f.change("patroni_primary", syncStandby, () => 1, { from: ONSET + 1 });
      },
      expect: [...quietThroughout(ALERT_NAMES.noLeader), ...quietThroughout(ALERT_NAMES.multipleLeaders)],
    },
    {
      title: "a second member reports primary",
      fault: (f) => f.change("patroni_primary", asyncReplica, () => 1),
      expect: firesAfterFor(plan, ALERT_NAMES.multipleLeaders, [primaryLabels(primary), primaryLabels(asyncReplica)]),
    },
    {
      title: "a failover seen one interval early: both primaries in one evaluation",
      fault: (f) => {
        f.change("patroni_primary", syncStandby, () => 1);
        f.change("patroni_primary", primary, () => 0, { from: ONSET + 1 });
      },
      expect: quietThroughout(ALERT_NAMES.multipleLeaders),
    },
    {
      title: "the synchronous standby stops being one",
      fault: (f) => f.change("patroni_sync_standby", syncStandby, () => 0),
      expect: firesAfterFor(plan, ALERT_NAMES.syncStandbyMissing, [primaryLabels(primary)]),
    },
    {
      title: "the synchronous standby role moves to the other replica",
      fault: (f) => {
        f.change("patroni_sync_standby", syncStandby, () => 0);
        f.change("patroni_sync_standby", asyncReplica, () => 1);
      },
      expect: quietThroughout(ALERT_NAMES.syncStandbyMissing),
    },
    {
      title: `a replica more than maximum_lag_on_failover (${maximumLagOnFailover} bytes) behind`,
      fault: lagged(maximumLagOnFailover + 4096),
      expect: firesAfterFor(plan, ALERT_NAMES.replicationLagHigh, [lagLabels(asyncReplica)]),
    },
    {
      title: "a replica exactly maximum_lag_on_failover behind (still promotable)",
      fault: lagged(maximumLagOnFailover),
      expect: quietThroughout(ALERT_NAMES.replicationLagHigh),
    },
    {
      title: "an etcd member loses its leader",
      fault: (f) => f.change("etcd_server_has_leader", syncStandby, () => 0),
      expect: firesAfterFor(plan, ALERT_NAMES.etcdNoLeader, [etcdOn(syncStandby)]),
    },
    {
      title: "an etcd member without a leader for one interval (an election)",
      fault: (f) => f.change("etcd_server_has_leader", syncStandby, () => 0, { until: ONSET + 1 }),
      expect: quietThroughout(ALERT_NAMES.etcdNoLeader),
    },
    {
      title: "an etcd member stops answering (and is not also a PghaTargetDown)",
      fault: (f) => f.targetDown("etcd", asyncReplica),
      expect: [...firesAfterFor(plan, ALERT_NAMES.etcdMemberDown, [target("etcd", asyncReplica)]), ...quietThroughout(ALERT_NAMES.targetDown)],
    },
    {
      title: "an etcd member misses fewer scrapes than the rule waits",
      fault: (f) => f.targetDown("etcd", asyncReplica, { until: ONSET + forSteps(plan, ALERT_NAMES.etcdMemberDown) }),
      expect: quietThroughout(ALERT_NAMES.etcdMemberDown),
    },
    {
      title: "etcd's database above 80 % of the quota",
      fault: (f) => f.change("etcd_mvcc_db_total_size_in_bytes", primary, () => Math.ceil(quota * 0.81)),
      expect: firesAfterFor(plan, ALERT_NAMES.etcdDatabaseNearQuota, [target("etcd", primary)]),
    },
    {
      title: "etcd's database at 79 % of the quota",
      fault: (f) => f.change("etcd_mvcc_db_total_size_in_bytes", primary, () => Math.floor(quota * 0.79)),
      expect: quietThroughout(ALERT_NAMES.etcdDatabaseNearQuota),
    },
    {
      title: "a certificate with 20 days left",
      fault: (f) => f.change("pgha_certificate_expiry_timestamp_seconds", haproxy[1], (step) => step * I + 20 * 86400, { match: { path: NODE_PATHS.caCert } }),
      expect: firesAfterFor(plan, ALERT_NAMES.certificateExpiring, [{ ...target("node", haproxy[1]), path: NODE_PATHS.caCert }]),
    },
    {
      title: "a certificate with 22 days left",
      fault: (f) => f.change("pgha_certificate_expiry_timestamp_seconds", haproxy[1], (step) => step * I + 22 * 86400, { match: { path: NODE_PATHS.caCert } }),
      expect: quietThroughout(ALERT_NAMES.certificateExpiring),
    },
    {
      title: "a data volume with 14 % available",
      fault: (f) => f.change("node_filesystem_avail_bytes", syncStandby, () => 14e9, { match: dataVolume }),
      expect: firesAfterFor(plan, ALERT_NAMES.diskFilling, [volumeLabels]),
    },
    {
      title: "a data volume with 35 % available that the last hour's trend fills within 6 h",
      // Falling since the first sample by 35 GB an hour; predict_linear needs two samples, so the condition starts with the second.
      fault: (f) => f.change("node_filesystem_avail_bytes", syncStandby, (step) => 35e9 - (step * I * 35e9) / 3600, { match: dataVolume, from: 0 }),
      expect: firesAfterFor(plan, ALERT_NAMES.diskFilling, [volumeLabels], 1),
    },
    {
      title: "a data volume with 16 % available, steady",
      fault: (f) => f.change("node_filesystem_avail_bytes", syncStandby, () => 16e9, { match: dataVolume, from: 0 }),
      expect: quietThroughout(ALERT_NAMES.diskFilling, 0),
    },
    {
      title: "a mostly empty data volume written as fast (a base backup): the trend alone does not fire",
      fault: (f) => f.change("node_filesystem_avail_bytes", syncStandby, (step) => 60e9 - (step * I * 35e9) / 3600, { match: dataVolume, from: 0 }),
      expect: quietThroughout(ALERT_NAMES.diskFilling, 0),
    },
    {
      title: "an HAProxy loses the writer",
      fault: (f) => f.change("haproxy_backend_active_servers", haproxy[2], () => 0, { match: { proxy: "pg_primary" } }),
      expect: firesAfterFor(plan, ALERT_NAMES.writerBackendDown, [{ ...target("haproxy", haproxy[2]), proxy: "pg_primary" }]),
    },
    {
      title: "an HAProxy without a writer for one interval (a failover)",
      fault: (f) => f.change("haproxy_backend_active_servers", haproxy[2], () => 0, { match: { proxy: "pg_primary" }, until: ONSET + 1 }),
      expect: quietThroughout(ALERT_NAMES.writerBackendDown),
    },
    {
      title: "a postgres_exporter stops answering",
      fault: (f) => f.targetDown("postgres", asyncReplica),
      expect: firesAfterFor(plan, ALERT_NAMES.targetDown, [target("postgres", asyncReplica)]),
    },
    {
      title: "a postgres_exporter misses fewer scrapes than the rule waits",
      fault: (f) => f.targetDown("postgres", asyncReplica, { until: ONSET + forSteps(plan, ALERT_NAMES.targetDown) }),
      expect: quietThroughout(ALERT_NAMES.targetDown),
    },
  ];
}

/**
 * Prometheus expands annotations as Go templates; ours use `{{ $labels.x }}`
 * only (a missing label expands to ""), so promtool's expected annotations
 * are that substitution. Anything else in a template fails here first.
 */
function expandAnnotation(template: string, labels: Record<string, string>): string {
  const expanded = template.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, name: string) => labels[name] ?? "");
  assert.ok(!expanded.includes("{{"), `annotation uses more than {{ $labels.x }}: ${template}`);
  return expanded;
}

const RULE_FILE = "pgha-alerts.yml";

function alertTestGroup(plan: ClusterPlan, c: AlertCase): Record<string, unknown> {
  const I = plan.config.monitoring.scrapeIntervalSeconds;
  const rules = alertRules(plan).groups[0].rules;
  const fixture = new Fixture(plan);
  c.fault(fixture);
  return {
    name: c.title,
    interval: `${I}s`,
    input_series: fixture.input(),
    alert_rule_test: c.expect.map(({ step, alert, firing }) => {
      const rule = rules.find((r) => r.alert === alert);
      assert.ok(rule, `no rule ${alert} in the rendered file`);
      return {
        eval_time: `${step * I}s`,
        alertname: alert,
        exp_alerts: firing.map((labels) => ({
          exp_labels: { ...labels, ...rule.labels },
          exp_annotations: { summary: expandAnnotation(rule.annotations.summary, labels), description: expandAnnotation(rule.annotations.description, labels) },
        })),
      };
    }),
  };
}

/** Each dashboard query, as `absent(query)` expecting no sample: the query has a series in a healthy cluster. */
function dashboardTestGroup(plan: ClusterPlan): Record<string, unknown> {
  const I = plan.config.monitoring.scrapeIntervalSeconds;
  return {
    name: "every dashboard query has a series in a healthy cluster",
    interval: `${I}s`,
    input_series: new Fixture(plan).input(),
    promql_expr_test: dashboardQueries(grafanaDashboard(plan)).map(({ expr }) => ({ expr: `absent(${expr})`, eval_time: `${STEPS * I}s`, exp_samples: [] })),
  };
}

function testFile(plan: ClusterPlan, groups: Record<string, unknown>[]): string {
  return dumpYaml({ rule_files: [RULE_FILE], evaluation_interval: `${plan.config.monitoring.scrapeIntervalSeconds}s`, tests: groups });
}

/** `promtool <args>` on files in /srv of a fresh root. */
async function promtool(name: string, files: Record<string, string>, args: string[]): Promise<{ code: number; output: string }> {
  const root = new TestRoot(rootfs, base, name);
  for (const [file, content] of Object.entries(files)) root.write(`/srv/${file}`, content);
  const result = await root.run(["/usr/bin/promtool", ...args], { timeoutMs: 60_000 });
  return { code: result.code, output: `${result.stdout}${result.stderr}` };
}

for (const { name, plan } of PLANS) {
  describe(`alert rules, ${name}`, () => {
    const interval = plan.config.monitoring.scrapeIntervalSeconds;
    const rules = alertRules(plan).groups[0].rules;

    test("durations are multiples of the scrape interval: no leader for 2 intervals, several leaders for one", () => {
      assert.equal(alertRules(plan).groups[0].interval, `${interval}s`);
      assert.equal(rules.find((r) => r.alert === ALERT_NAMES.noLeader)?.for, `${2 * interval}s`);
      assert.equal(rules.find((r) => r.alert === ALERT_NAMES.multipleLeaders)?.for, `${interval}s`);
      assert.deepEqual(rules.map((r) => r.alert).sort(), Object.values(ALERT_NAMES).sort());
    });

    test("`promtool check rules` accepts the rendered file", async () => {
      const result = await promtool("check", { [RULE_FILE]: renderAlertRules(plan) }, ["check", "rules", `/srv/${RULE_FILE}`]);
      assert.equal(result.code, 0, result.output);
      assert.match(result.output, new RegExp(`SUCCESS: ${rules.length} rules found`));
    });

    test("`promtool test rules`: every alert fires `for` after its fault, and stays quiet in its near miss", async () => {
      const cases = alertCases(plan);
      const result = await promtool(
        "test",
        {
          [RULE_FILE]: renderAlertRules(plan),
          "tests.yml": testFile(
            plan,
            cases.map((c) => alertTestGroup(plan, c)),
          ),
        },
        ["test", "rules", "/srv/tests.yml"],
      );
      assert.equal(result.code, 0, result.output);
      assert.match(result.output, /SUCCESS/);
    });

    test("`promtool test rules`: every dashboard query returns a series for a healthy cluster", async () => {
      const result = await promtool("dashboard", { [RULE_FILE]: renderAlertRules(plan), "tests.yml": testFile(plan, [dashboardTestGroup(plan)]) }, [
        "test",
        "rules",
        "/srv/tests.yml",
      ]);
      assert.equal(result.code, 0, result.output);
    });
  });
}

describe("alert rules: the cases and the controls", () => {
  const plan = PLANS[0].plan;

  test("every alert has a case where it fires and one where it stays quiet after a fault", () => {
    const cases = alertCases(plan).slice(1); // not the healthy cluster
    for (const alert of Object.values(ALERT_NAMES)) {
      const expectations = cases.flatMap((c) => c.expect.filter((e) => e.alert === alert));
      assert.ok(
        expectations.some((e) => e.firing.length > 0),
        `${alert}: no firing case`,
      );
      assert.ok(
        cases.some((c) => c.expect.some((e) => e.alert === alert) && c.expect.filter((e) => e.alert === alert).every((e) => e.firing.length === 0)),
        `${alert}: no case after a fault where it stays quiet`,
      );
    }
  });

  test("`promtool check rules` refuses a broken expression (control)", async () => {
    const broken = dumpYaml({ groups: [{ name: "pgha", rules: [{ alert: "Broken", expr: "count((patroni_primary)" }] }] });
    const result = await promtool("check-control", { [RULE_FILE]: broken }, ["check", "rules", `/srv/${RULE_FILE}`]);
    assert.notEqual(result.code, 0, result.output);
  });

  test("`promtool test rules` fails a case whose expectation is wrong (control)", async () => {
    const wrong: AlertCase = { title: "control", fault: () => undefined, expect: [{ step: STEPS, alert: ALERT_NAMES.noLeader, firing: [{}] }] };
    const result = await promtool("test-control", { [RULE_FILE]: renderAlertRules(plan), "tests.yml": testFile(plan, [alertTestGroup(plan, wrong)]) }, [
      "test",
      "rules",
      "/srv/tests.yml",
    ]);
    assert.notEqual(result.code, 0, result.output);
    assert.match(result.output, /PghaNoLeader/);
  });
});
