/**
 * Where things live on a node. The renderers, the boot step, the lab and the
 * drills all take paths from here, so a file on a node can be read side by
 * side with the code that wrote it.
 */
export const NODE_PATHS = {
  /** Certificates and keys fetched at boot (never in user-data). */
  tlsDir: "/etc/pgha/tls",
  caCert: "/etc/pgha/tls/ca.crt",
  /** What the boot step fetches from SSM and where it writes it. */
  secretsManifest: "/etc/pgha/secrets.json",
  fetchSecrets: "/usr/local/sbin/pgha-fetch-secrets",
  prepareDataVolume: "/usr/local/sbin/pgha-prepare-data-volume",
  installEtcd: "/usr/local/sbin/pgha-install-etcd",
  /** First-boot check of the installed Patroni, PostgreSQL and etcd versions (pgha-check-versions.sh). */
  checkVersions: "/usr/local/sbin/pgha-check-versions",
  /** Written by the version check when it refuses: what is wrong; the held units assert it is absent. */
  versionsRefused: "/etc/pgha/versions-refused",
  etcdConfig: "/etc/etcd/etcd.conf.yml",
  etcdDataDir: "/var/lib/etcd",
  etcdBinary: "/usr/local/bin/etcd",
  /** Environment for etcdctl on the node: endpoints and client certificate. */
  etcdctlEnv: "/etc/pgha/etcdctl.env",
  patroniConfig: "/etc/patroni/patroni.yml",
  /** Database and REST API passwords as PATRONI_* variables, mode 0600. */
  patroniEnv: "/etc/patroni/patroni.env",
  haproxyConfig: "/etc/haproxy/haproxy.cfg",
  systemdDir: "/etc/systemd/system",
  sysctl: "/etc/sysctl.d/90-pgha.conf",
  /** Routes to the other regions at the inter-Region peering MTU (pgha-path-mtu.sh, run by pgha-path-mtu.service). */
  pathMtu: "/usr/local/sbin/pgha-path-mtu",
  /**
   * invoke-rc.d's and deb-systemd-invoke's policy hook (Debian policy 9.3.3). The first boot ships one that refuses
   * every start, so no package starts its service with the package's own configuration; runcmd removes it first.
   */
  policyRcD: "/usr/sbin/policy-rc.d",
  /** Stops Debian/Ubuntu's postgresql-common from creating and starting a `main` cluster. */
  createClusterConf: "/etc/postgresql-common/createcluster.d/50-pgha.conf",
  postgresSocketDir: "/var/run/postgresql",
  /** TLS of every metrics endpoint (exporter-toolkit's web config): the metrics certificate, client certificates required. */
  metricsWebConfig: "/etc/pgha/metrics-web.yml",
  prometheusConfig: "/etc/pgha/prometheus/prometheus.yml",
  alertRules: "/etc/pgha/prometheus/pgha-alerts.yml",
  alertmanagerConfig: "/etc/pgha/alertmanager/alertmanager.yml",
  /** Alertmanager's gossip between the regions over mutual TLS. */
  alertmanagerClusterTls: "/etc/pgha/alertmanager/cluster-tls.yml",
  /** Writes the certificates' expiry for node_exporter's textfile collector. */
  certificateMetrics: "/usr/local/sbin/pgha-certificate-metrics",
  nodeExporterTextfileDir: "/var/lib/prometheus/node-exporter",
  /** pgBackRest (cloud-init/pgbackrest.ts): its configuration, and the cipher passphrase beside it, fetched from SSM. */
  pgbackrestConfig: "/etc/pgbackrest/pgbackrest.conf",
  pgbackrestCipherConf: "/etc/pgbackrest/conf.d/pgha-cipher.conf",
  /** archive-push's asynchronous queue (archive-async): WAL waits here until it is in every repository. */
  pgbackrestSpool: "/var/spool/pgbackrest",
  pgbackrestLogDir: "/var/log/pgbackrest",
  /** Run by the backup timers on every database node; backs up only where PostgreSQL is the primary. */
  backup: "/usr/local/sbin/pgha-backup",
  /** The in-place restore of one node from the repository (ops/restore.ts drives it). */
  restore: "/usr/local/sbin/pgha-restore",
  /** Patroni's post_bootstrap: creates the exporter's role (pg_monitor) once, when the cluster is initialised. */
  postBootstrap: "/usr/local/sbin/pgha-post-bootstrap",
} as const;

/** PostgreSQL directories depend on the major version (Debian layout). */
export function postgresPaths(major: number): { binDir: string; mountPoint: string; dataDir: string } {
  return {
    binDir: `/usr/lib/postgresql/${major}/bin`,
    mountPoint: `/var/lib/postgresql/${major}`,
    dataDir: `/var/lib/postgresql/${major}/main`,
  };
}
