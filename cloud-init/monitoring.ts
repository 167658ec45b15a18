import { certificateFor, CLUSTER_USERS, NODE_PATHS, nodesWithRole, PORTS, type ClusterPlan, type NodePlan } from "../plan";
import { renderAlertRules } from "./alert-rules";
import type { RenderedUnit, SystemdUnit } from "./systemd";
import { dumpYaml } from "./yaml";

/**
 * Metrics and alerts (docs/monitoring.md). Every node runs node_exporter;
 * database nodes also postgres_exporter, and serve Patroni's and etcd's own
 * /metrics; HAProxy nodes serve HAProxy's built-in exporter and run the
 * region's Prometheus and Alertmanager. Each region's Prometheus scrapes
 * every node of every region, so any one region alone still sees (and
 * alerts on) the whole cluster; the three Alertmanagers gossip, so an alert
 * that all three Prometheus servers raise is sent once.
 *
 * Every endpoint speaks TLS and demands a client certificate from the
 * cluster CA; Prometheus and Alertmanager present the node's `metrics`
 * certificate.
 */

/** A scrape job: the nodes it reaches, on which port and path. */
export interface ScrapeJob {
  job: string;
  port: number;
  metricsPath: string;
  nodes: NodePlan[];
  /** Its own scrape interval in seconds, when not the plan's. */
  intervalSeconds?: number;
}

/**
 * node_exporter is scraped at most every 15 s: what it tells (disks, memory,
 * certificate expiry) changes over minutes, and its alerts wait minutes
 * anyway. At the lab's 2 s, three Prometheus servers scraping it cost about
 * 9 % of a core per node, half a core of a 2-core machine in all.
 */
export const NODE_EXPORTER_MIN_INTERVAL_SECONDS = 15;

export function scrapeJobs(plan: ClusterPlan): ScrapeJob[] {
  const databases = nodesWithRole(plan, "postgres");
  const haproxies = nodesWithRole(plan, "haproxy");
  return [
    { job: "patroni", port: PORTS.patroniRest, metricsPath: "/metrics", nodes: databases },
    { job: "postgres", port: PORTS.postgresExporter, metricsPath: "/metrics", nodes: databases },
    { job: "etcd", port: PORTS.etcdMetrics, metricsPath: "/metrics", nodes: nodesWithRole(plan, "etcd") },
    {
      job: "node",
      port: PORTS.nodeExporter,
      metricsPath: "/metrics",
      nodes: plan.nodes,
      intervalSeconds: Math.max(plan.config.monitoring.scrapeIntervalSeconds, NODE_EXPORTER_MIN_INTERVAL_SECONDS),
    },
    { job: "haproxy", port: PORTS.haproxyMetrics, metricsPath: "/metrics", nodes: haproxies },
    { job: "prometheus", port: PORTS.prometheus, metricsPath: "/metrics", nodes: haproxies },
    { job: "alertmanager", port: PORTS.alertmanager, metricsPath: "/metrics", nodes: haproxies },
  ];
}

/** What a Prometheus or Alertmanager presents to, and checks of, a metrics endpoint. */
function clientTls(plan: ClusterPlan, node: NodePlan): Record<string, string> {
  const cert = certificateFor(plan.certificates, node.name, "metrics");
  return { ca_file: NODE_PATHS.caCert, cert_file: cert.certPath, key_file: cert.keyPath, min_version: "TLS12" };
}

/** exporter-toolkit's `--web.config.file` (node_exporter, postgres_exporter, Prometheus, Alertmanager). */
export function metricsWebConfig(plan: ClusterPlan, node: NodePlan): Record<string, unknown> {
  const cert = certificateFor(plan.certificates, node.name, "metrics");
  return {
    tls_server_config: {
      cert_file: cert.certPath,
      key_file: cert.keyPath,
      client_auth_type: "RequireAndVerifyClientCert",
      client_ca_file: NODE_PATHS.caCert,
      min_version: "TLS12",
    },
  };
}

function seconds(value: number): string {
  return `${value}s`;
}

/** The region's Prometheus (on its HAProxy node): the whole cluster's targets, the alert rules, every Alertmanager. */
export function prometheusConfig(plan: ClusterPlan, node: NodePlan): Record<string, unknown> {
  if (!node.roles.has("haproxy")) throw new Error(`${node.name} has no haproxy role, so runs no Prometheus`);
  const { monitoring, patroni } = plan.config;
  const tls = clientTls(plan, node);
  const interval = monitoring.scrapeIntervalSeconds;
  return {
    global: {
      scrape_interval: seconds(interval),
      evaluation_interval: seconds(interval),
      scrape_timeout: seconds(Math.min(10, interval)),
      // No label naming this Prometheus: the three servers must raise identical alerts for the Alertmanagers to
      // deduplicate them.
    },
    rule_files: [NODE_PATHS.alertRules],
    alerting: {
      alertmanagers: [
        {
          scheme: "https",
          tls_config: tls,
          static_configs: [{ targets: nodesWithRole(plan, "haproxy").map((am) => `${am.privateIp}:${PORTS.alertmanager}`) }],
        },
      ],
    },
    scrape_configs: scrapeJobs(plan).map((job) => ({
      job_name: job.job,
      ...(job.intervalSeconds === undefined ? {} : { scrape_interval: seconds(job.intervalSeconds), scrape_timeout: seconds(Math.min(10, job.intervalSeconds)) }),
      scheme: "https",
      metrics_path: job.metricsPath,
      // Targets are addressed by IP, which every metrics certificate names.
      tls_config: tls,
      static_configs: job.nodes.map((target) => ({
        targets: [`${target.privateIp}:${job.port}`],
        labels: { instance: `${target.name}:${job.port}`, node: target.name, region: target.region, cluster: patroni.scope },
      })),
    })),
  };
}

/** The region of an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>): sigv4 signs for it. */
export function topicRegion(topicArn: string): string {
  const region = topicArn.split(":")[3];
  if (!region) throw new Error(`internal: ${topicArn} is not an SNS topic ARN`);
  return region;
}

/**
 * Alertmanager: one route, to the stack's SNS topic when there is one
 * (signed with the instance role's credentials), else to no receiver.
 */
export function alertmanagerConfig(plan: ClusterPlan): Record<string, unknown> {
  const { alertTopicArn, scrapeIntervalSeconds, groupIntervalSeconds } = plan.config.monitoring;
  const receiver = alertTopicArn
    ? {
        name: "sns",
        sns_configs: [
          {
            topic_arn: alertTopicArn,
            sigv4: { region: topicRegion(alertTopicArn) },
            subject: `[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.cluster }})`,
            send_resolved: true,
          },
        ],
      }
    : { name: "none" };
  return {
    route: {
      receiver: receiver.name,
      group_by: ["alertname", "cluster"],
      // A page should not wait long beyond the rule's own `for`.
      group_wait: seconds(Math.max(10, 2 * scrapeIntervalSeconds)),
      group_interval: seconds(groupIntervalSeconds),
      repeat_interval: "4h",
    },
    receivers: [receiver],
  };
}

/** `--cluster.tls-config`: the regions' Alertmanagers gossip over mutual TLS (TCP only). */
export function alertmanagerClusterTls(plan: ClusterPlan, node: NodePlan): Record<string, unknown> {
  const server = metricsWebConfig(plan, node).tls_server_config;
  const client = clientTls(plan, node);
  return { tls_server_config: server, tls_client_config: { ca_file: client.ca_file, cert_file: client.cert_file, key_file: client.key_file } };
}

/** A drop-in that replaces the packaged unit's command line (the package's hardening stays). */
export interface ServiceDropIn {
  /** The packaged unit, e.g. prometheus.service. */
  unit: string;
  dropIn: SystemdUnit;
}

function replaceCommand(unit: string, argv: string[], extra: Record<string, string> = {}): ServiceDropIn {
  return { unit, dropIn: { Service: { ...extra, ExecStart: ["", argv.join(" ")] } } };
}

/** Where a drop-in lands on the node. */
export function dropInPath(dropIn: ServiceDropIn): string {
  return `${NODE_PATHS.systemdDir}/${dropIn.unit}.d/pgha.conf`;
}

/**
 * The packaged monitoring services of a node with their pgha command lines.
 * Debian's and Ubuntu's units read `$ARGS` from /etc/default (a conffile);
 * a drop-in leaves that file as the package shipped it.
 */
export function monitoringDropIns(plan: ClusterPlan, node: NodePlan): ServiceDropIn[] {
  const web = `--web.config.file=${NODE_PATHS.metricsWebConfig}`;
  const dropIns = [
    replaceCommand("prometheus-node-exporter.service", [
      "/usr/bin/prometheus-node-exporter",
      web,
      `--web.listen-address=:${PORTS.nodeExporter}`,
      `--collector.textfile.directory=${NODE_PATHS.nodeExporterTextfileDir}`,
    ]),
  ];
  if (node.roles.has("postgres")) {
    dropIns.push(
      replaceCommand("prometheus-postgres-exporter.service", ["/usr/bin/prometheus-postgres-exporter", web, `--web.listen-address=:${PORTS.postgresExporter}`], {
        // The packaged /etc/default file's DATA_SOURCE_NAME is replaced: the local socket, as the role
        // pgha-post-bootstrap creates, by peer authentication (no password to keep).
        EnvironmentFile: "",
        Environment: `DATA_SOURCE_NAME=postgresql:///postgres?host=${NODE_PATHS.postgresSocketDir}&user=${CLUSTER_USERS.monitoring}&sslmode=disable`,
      }),
    );
  }
  if (node.roles.has("haproxy")) {
    const { monitoring } = plan.config;
    const peers = nodesWithRole(plan, "haproxy").filter((peer) => peer.name !== node.name);
    dropIns.push(
      replaceCommand("prometheus.service", [
        "/usr/bin/prometheus",
        `--config.file=${NODE_PATHS.prometheusConfig}`,
        web,
        `--web.listen-address=:${PORTS.prometheus}`,
        // Not the package's metrics2/: the package starts Prometheus with its default config (localhost targets)
        // before this drop-in exists, and those series would linger there as down targets for five minutes.
        "--storage.tsdb.path=/var/lib/prometheus/pgha/",
        `--storage.tsdb.retention.time=${monitoring.retentionDays}d`,
      ]),
      replaceCommand("prometheus-alertmanager.service", [
        "/usr/bin/prometheus-alertmanager",
        `--config.file=${NODE_PATHS.alertmanagerConfig}`,
        web,
        `--web.listen-address=:${PORTS.alertmanager}`,
        "--storage.path=/var/lib/prometheus/alertmanager-pgha/",
        `--cluster.listen-address=0.0.0.0:${PORTS.alertmanagerCluster}`,
        `--cluster.advertise-address=${node.privateIp}:${PORTS.alertmanagerCluster}`,
        `--cluster.tls-config=${NODE_PATHS.alertmanagerClusterTls}`,
        ...peers.map((peer) => `--cluster.peer=${peer.privateIp}:${PORTS.alertmanagerCluster}`),
      ]),
    );
  }
  return dropIns;
}

export const CERTIFICATE_METRICS_UNIT = "pgha-certificate-metrics.service";
export const CERTIFICATE_METRICS_TIMER = "pgha-certificate-metrics.timer";

/** The certificates' expiry for node_exporter: at boot (multi-user.target) and every hour after. */
export function certificateMetricsUnits(): RenderedUnit[] {
  return [
    {
      name: CERTIFICATE_METRICS_UNIT,
      unit: {
        Unit: { Description: "Certificate expiry for node_exporter's textfile collector (pgha_certificate_expiry_timestamp_seconds)" },
        Service: {
          Type: "oneshot",
          ExecStart: `${NODE_PATHS.certificateMetrics} ${NODE_PATHS.tlsDir} ${NODE_PATHS.nodeExporterTextfileDir}/pgha-certificates.prom`,
        },
        Install: { WantedBy: "multi-user.target" },
      },
    },
    {
      name: CERTIFICATE_METRICS_TIMER,
      unit: {
        Unit: { Description: "Hourly certificate expiry metrics" },
        Timer: { OnBootSec: "1h", OnUnitActiveSec: "1h" },
        Install: { WantedBy: "timers.target" },
      },
    },
  ];
}

/**
 * What the boot step starts once the secrets are in place, in order: the
 * packaged services (their drop-ins now in effect), then the expiry metrics
 * once and its timer.
 */
export function monitoringStartOrder(plan: ClusterPlan, node: NodePlan): string[] {
  return [...monitoringDropIns(plan, node).map((d) => d.unit), CERTIFICATE_METRICS_UNIT, CERTIFICATE_METRICS_TIMER];
}

/** The monitoring files of a node: path → YAML content (owner prometheus, mode 0640). */
export function monitoringConfigFiles(plan: ClusterPlan, node: NodePlan): { path: string; content: string }[] {
  const files: { path: string; content: string }[] = [{ path: NODE_PATHS.metricsWebConfig, content: dumpYaml(metricsWebConfig(plan, node)) }];
  if (node.roles.has("haproxy")) {
    files.push(
      { path: NODE_PATHS.prometheusConfig, content: dumpYaml(prometheusConfig(plan, node)) },
      { path: NODE_PATHS.alertRules, content: renderAlertRules(plan) },
      { path: NODE_PATHS.alertmanagerConfig, content: dumpYaml(alertmanagerConfig(plan)) },
      { path: NODE_PATHS.alertmanagerClusterTls, content: dumpYaml(alertmanagerClusterTls(plan, node)) },
    );
  }
  return files;
}
